package tokencache

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestRealRedisReplicasFetchOnce runs against a real redis-server when
// TOKENCACHE_TEST_REDIS_URL is set (e.g. redis://127.0.0.1:6379/15), for
// what miniredis cannot show: real EVALSHA, timing, connection handling.
// It flushes nothing; it uses a prefix of its own.
func TestRealRedisReplicasFetchOnce(t *testing.T) {
	url := os.Getenv("TOKENCACHE_TEST_REDIS_URL")
	if url == "" {
		t.Skip("TOKENCACHE_TEST_REDIS_URL not set")
	}
	prefix := fmt.Sprintf("tokencache-test-%d:", time.Now().UnixNano())
	var calls atomic.Int64
	fetch := func(context.Context) (Fetched, error) {
		calls.Add(1)
		time.Sleep(100 * time.Millisecond) // a token endpoint's latency
		return Fetched{AccessToken: "real-token", ExpiresAt: time.Now().Add(time.Hour)}, nil
	}
	var caches []*Cache
	for range 3 {
		store, err := NewRedisStore(RedisOptions{URL: url, KeyPrefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		if err := store.Ping(t.Context()); err != nil {
			t.Fatal(err)
		}
		c, err := New(Options{Store: store})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = store.Client().Del(context.Background(), RecordKey(prefix, testApp("graph-api", fetch))).Err()
			_ = c.Close()
		})
		if err := c.Register(testApp("graph-api", fetch)); err != nil {
			t.Fatal(err)
		}
		caches = append(caches, c)
	}
	var wg sync.WaitGroup
	for _, c := range caches {
		for range 50 {
			wg.Go(func() {
				if rec, err := c.Token(t.Context(), "graph-api"); err != nil || rec.AccessToken != "real-token" {
					t.Errorf("Token() = %q, %v", rec.AccessToken, err)
				}
			})
		}
	}
	wg.Wait()
	if n := calls.Load(); n != 1 {
		t.Errorf("fetch called %d times across 3 replicas, want 1", n)
	}
}
