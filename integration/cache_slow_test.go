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

// slowRedis is a TCP proxy in front of a real redis-server that hands
// each of Redis's answers to the client delay after Redis sent it: a Redis
// that answers everything, late (far away, or busy with a fleet's warm-up).
func slowRedis(t *testing.T, redisAddr string, delay time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
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
			conns.Go(func() { delayCopy(client, server, delay); _ = client.Close() })
		}
	}()
	return ln.Addr().String()
}

// delayCopy copies src to dst, each chunk delay after it was read.
func delayCopy(dst io.Writer, src io.Reader, delay time.Duration) {
	type chunk struct {
		at   time.Time
		data []byte
	}
	chunks := make(chan chunk, 1024)
	go func() {
		defer close(chunks)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				chunks <- chunk{time.Now(), buf[:n]}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range chunks {
		time.Sleep(time.Until(c.at.Add(delay))) // the proxy's whole point
		if _, err := dst.Write(c.data); err != nil {
			return
		}
	}
}

// TestCacheSlowRedisUnderOwnBurstKeepsSharing: two replicas warm 40 keys
// at once through a Redis whose every answer comes 150 ms late, past the
// 100 ms OpTimeout. Each call times out while Redis answers the replica's
// other calls: its own burst, not a Redis that is down. The replicas keep
// sharing (one token request per key, no outage logged). A Redis that
// answers nothing is still ridden out: TestCacheRedisHungThenBack.
func TestCacheSlowRedisUnderOwnBurstKeepsSharing(t *testing.T) {
	r := startRedis(t)
	addr := slowRedis(t, r.Addr, 150*time.Millisecond)
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
	t.Logf("2 replicas x %d cold keys through a Redis answering 150 ms late: %d token requests in %v",
		keys, calls.Load(), time.Since(start).Round(time.Millisecond))
	if n := calls.Load(); n != keys {
		t.Errorf("%d token requests for %d keys on 2 replicas, want one per key", n, keys)
	}
	if n := logsA.FilterMessageSnippet("token store unavailable").Len() + logsB.FilterMessageSnippet("token store unavailable").Len(); n != 0 {
		t.Errorf("%d outage warnings for a Redis that answered every call", n)
	}
}
