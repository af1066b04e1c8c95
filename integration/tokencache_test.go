package integration

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/tokencache"
	"github.com/caddy-entra/caddy-entra/tokencache/redisstore"
)

// TestTokenCacheReplicasFetchOnceOnRealRedis drives three tokencache.Cache
// instances (three replicas' caches, without Caddy) against a real
// redis-server, for what miniredis cannot show: real EVALSHA, real
// connections and timing.
func TestTokenCacheReplicasFetchOnceOnRealRedis(t *testing.T) {
	r := startRedis(t)
	var calls atomic.Int64
	release := make(chan struct{})
	fetch := func(ctx context.Context) (tokencache.Fetched, error) {
		calls.Add(1)
		select { // hold the refresh open until every caller is waiting
		case <-release:
		case <-ctx.Done():
			return tokencache.Fetched{}, ctx.Err()
		}
		return tokencache.Fetched{AccessToken: "real-redis-token", ExpiresAt: time.Now().Add(time.Hour)}, nil
	}
	app := tokencache.Application{Name: "graph-api", CacheKey: "https://login.example/t/oauth2/v2.0/token\nt\nc",
		Scopes: []string{"https://graph.microsoft.com/.default"}, Fetch: fetch}

	const replicas, callers = 3, 50
	var handles []*tokencache.Handle
	for range replicas {
		store, err := redisstore.New(redisstore.Options{URL: r.URL, KeyPrefix: "cachetest:"})
		if err != nil {
			t.Fatal(err)
		}
		if err := store.Ping(context.Background()); err != nil {
			t.Fatal(err)
		}
		c, err := tokencache.New(tokencache.Options{Store: store})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		h, err := c.Register(app)
		if err != nil {
			t.Fatal(err)
		}
		handles = append(handles, h)
	}
	var wg sync.WaitGroup
	var started sync.WaitGroup
	started.Add(replicas * callers)
	for _, h := range handles {
		for range callers {
			wg.Go(func() {
				started.Done()
				rec, err := h.Token(context.Background())
				if err != nil || rec.AccessToken != "real-redis-token" {
					t.Errorf("Token() = %v, %v", rec, err)
				}
			})
		}
	}
	started.Wait()
	// Every caller has started; the lock losers are polling Redis.
	close(release)
	wg.Wait()
	if n := calls.Load(); n != 1 {
		t.Errorf("fetch called %d times across %d replicas x %d callers, want 1", n, replicas, callers)
	}
}
