package redisstore

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// RouteLogs sends go-redis's own messages (failed dials, pool and
// pub/sub events), which it otherwise prints to stderr one per failed dial,
// to logger at debug level. The store already reports an outage once, at
// warn level. go-redis has one logger per process: the last call wins.
func RouteLogs(logger *zap.Logger) {
	redis.SetLogger(redisLogger{logger})
}

// redisLogger is go-redis's Logging interface over zap.
type redisLogger struct{ logger *zap.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	if ce := l.logger.Check(zap.DebugLevel, "go-redis"); ce != nil {
		ce.Write(zap.String("message", strings.TrimSpace(fmt.Sprintf(format, v...))))
	}
}
