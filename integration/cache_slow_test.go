package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/tokencache"
	"github.com/caddy-entra/caddy-entra/tokencache/redisstore"
)

// busyRedis is a TCP proxy in front of a real redis-server that hands
// Redis's answers to the clients one at a time, each perAnswer after the
// one before: a Redis that takes perAnswer per command, so that an answer
// waits behind every command sent before it (a burst of 80 commands waits
// 400 ms at 5 ms each) and a command sent alone is answered at once.
func busyRedis(t *testing.T, redisAddr string, perAnswer time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	var turn sync.Mutex // one answer at a time
	t.Cleanup(func() { _ = ln.Close(); conns.Wait() })
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", redisAddr)
			if err != nil {
				_ = client.Close()
				continue
			}
			conns.Go(func() { _, _ = io.Copy(server, client); _ = server.Close() })
			conns.Go(func() { slowCopy(client, server, &turn, perAnswer); _ = client.Close() })
		}
	}()
	return ln.Addr().String()
}

// slowCopy copies src to dst, each chunk read taking its turn and perAnswer.
func slowCopy(dst io.Writer, src io.Reader, turn *sync.Mutex, perAnswer time.Duration) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			turn.Lock()
			time.Sleep(perAnswer) // the time Redis takes per answer: the proxy's whole point
			turn.Unlock()
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// TestCacheSlowRedisUnderOwnBurstKeepsSharing: two replicas warm 40 keys
// at once through a Redis that takes 5 ms per command, so that during the
// burst a command waits for up to 80 others, past the 100 ms OpTimeout.
// Those timeouts are the replicas' own burst, not a Redis that is down:
// the replicas keep sharing (one token request per key, no outage
// logged). A Redis that answers nothing is still ridden out:
// TestCacheRedisHungThenBack.
func TestCacheSlowRedisUnderOwnBurstKeepsSharing(t *testing.T) {
	r := startRedis(t)
	addr := busyRedis(t, r.Addr, 5*time.Millisecond)
	var calls atomic.Int64
	fetch := countingFetch("slow", &calls)
	const keys = 40
	var apps []tokencache.Application
	for i := range keys {
		apps = append(apps, cacheApp(fmt.Sprintf("app-%d", i), fmt.Sprintf("api://app-%d/.default", i), fetch))
	}
	ropts := redisstore.Options{URL: "redis://" + addr, KeyPrefix: "slow:"}
	opts := tokencache.Options{WaitTimeout: 20 * time.Second}
	a, _, logsA := newReplicaCache(t, ropts, opts, apps...)
	b, _, logsB := newReplicaCache(t, ropts, opts, apps...)

	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 2*keys)
	for _, c := range []*replicaCache{a, b} {
		for i := range keys {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if _, err := c.Token(ctx, fmt.Sprintf("app-%d", i)); err != nil {
					errs <- err
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("2 replicas x %d cold keys through a Redis taking 5 ms per command: %d token requests in %v",
		keys, calls.Load(), time.Since(start).Round(time.Millisecond))
	if n := calls.Load(); n != keys {
		t.Errorf("%d token requests for %d keys on 2 replicas, want one per key", n, keys)
	}
	if n := logsA.FilterMessageSnippet("token store unavailable").Len() + logsB.FilterMessageSnippet("token store unavailable").Len(); n != 0 {
		t.Errorf("%d outage warnings for a Redis that answered every call", n)
	}
}
