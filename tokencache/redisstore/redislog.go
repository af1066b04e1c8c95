package redisstore

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// RouteLogs sends go-redis's own messages (one per failed dial, otherwise
// on stderr) to logger at debug level: the store reports an outage once.
// go-redis has one logger per process: the last call wins.
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
