package integration

import (
	"context"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/tokencache"
	"github.com/caddy-entra/caddy-entra/tokencache/redisstore"
	"go.uber.org/zap/zaptest/observer"
)

// TestCacheFleetColdStampedeFetchesOnce: 5 replicas' caches × 1,000
// concurrent cold Token calls on one real redis-server make one token
// request; lock losers are woken by the winner's announcement (polling is
// set to 10s, so an answer well under that came through pub/sub).
func TestCacheFleetColdStampedeFetchesOnce(t *testing.T) {
	const replicas, callers = 5, 1000
	r := startRedis(t)
	var calls atomic.Int64
	release := make(chan struct{})
	fetch := func(ctx context.Context) (tokencache.Fetched, error) {
		calls.Add(1)
		select { // hold the request until every caller is waiting
		case <-release:
		case <-ctx.Done():
			return tokencache.Fetched{}, ctx.Err()
		}
		return tokencache.Fetched{AccessToken: "fleet-token", ExpiresAt: time.Now().Add(time.Hour)}, nil
	}
	var caches []*replicaCache
	var logs []*observer.ObservedLogs
	for range replicas {
		c, store, l := newReplicaCache(t, redisstore.Options{URL: r.URL, KeyPrefix: "fleet:", OpTimeout: countingOpTimeout},
			tokencache.Options{PollInterval: 10 * time.Second, WaitTimeout: 20 * time.Second},
			cacheApp("graph-api", "https://graph.microsoft.com/.default", fetch))
		if err := store.Ping(context.Background()); err != nil {
			t.Fatal(err)
		}
		caches = append(caches, c)
		logs = append(logs, l)
	}
	defer logWarnings(t, logs)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg, started sync.WaitGroup
	started.Add(replicas * callers)
	latencies := make([]time.Duration, replicas*callers)
	var failures atomic.Int64
	for r, c := range caches {
		for i := range callers {
			wg.Go(func() {
				started.Done()
				start := time.Now()
				rec, err := c.Token(ctx, "graph-api")
				latencies[r*callers+i] = time.Since(start)
				if err != nil || rec.AccessToken != "fleet-token" {
					failures.Add(1)
				}
			})
		}
	}
	started.Wait()
	time.Sleep(100 * time.Millisecond) // let the losers reach their wait (not needed for correctness)
	releasedAt := time.Now()
	close(release)
	wg.Wait()
	settle := time.Since(releasedAt)
	if n := failures.Load(); n != 0 {
		t.Errorf("%d of %d calls failed", n, replicas*callers)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("%d token requests for %d replicas × %d cold calls, want 1", n, replicas, callers)
	}
	if settle > 5*time.Second {
		t.Errorf("losers took %v after the winner's write, want well under the 10s poll (pub/sub)", settle)
	}
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	t.Logf("fetches=%d calls=%d settle-after-release=%v p50=%v p99=%v max=%v", calls.Load(), replicas*callers,
		settle, latencies[len(latencies)/2], latencies[len(latencies)*99/100], latencies[len(latencies)-1])
}
