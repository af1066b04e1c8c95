package redisstore

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestRedisLogsGoToZapAtDebugLevel(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	RouteLogs(zap.New(core))
	defer RouteLogs(zap.NewNop())

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	address := ln.Addr().String()
	ln.Close() // nothing listens there: every dial fails
	client := redis.NewClient(&redis.Options{Addr: address, MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := client.Ping(ctx).Err(); err == nil {
		t.Fatal("ping succeeded with nothing listening")
	}
	entries := logs.FilterMessage("go-redis").All()
	if len(entries) == 0 {
		t.Fatal("go-redis logged nothing through zap for a failed dial")
	}
	for _, e := range entries {
		if e.Level != zap.DebugLevel {
			t.Errorf("logged at %s, want debug: %v", e.Level, e.ContextMap())
		}
		if msg, _ := e.ContextMap()["message"].(string); !strings.Contains(msg, "dial") {
			t.Errorf("message %q, want the dial failure", msg)
		}
	}
}
