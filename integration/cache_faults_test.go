package integration

import (
	"context"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/tokencache"
	"github.com/caddy-entra/caddy-entra/tokencache/redisstore"
	"github.com/redis/go-redis/v9"
)

// countingFetch returns a FetchFunc handing out "<prefix>-N", valid an hour.
func countingFetch(prefix string, calls *atomic.Int64) tokencache.FetchFunc {
	return func(context.Context) (tokencache.Fetched, error) {
		n := calls.Add(1)
		return tokencache.Fetched{AccessToken: fmt.Sprintf("%s-%d", prefix, n), ExpiresAt: time.Now().Add(time.Hour)}, nil
	}
}

// TestCacheRedisHungThenBack: with redis-server stopped by SIGSTOP (it
// accepts connections and never answers), a replica answers from L1 at
// once and makes cold tokens with its own fetch within a few OpTimeouts,
// logging the outage once; after SIGCONT it writes to Redis again.
func TestCacheRedisHungThenBack(t *testing.T) {
	r := startRedis(t)
	var calls atomic.Int64
	fetch := countingFetch("hung", &calls)
	const apps = 5
	var registered []tokencache.Application
	for i := range apps {
		registered = append(registered, cacheApp(fmt.Sprintf("app-%d", i), fmt.Sprintf("api://app-%d/.default", i), fetch))
	}
	c, store, logs := newReplicaCache(t, redisstore.Options{URL: r.URL, KeyPrefix: "hung:"}, tokencache.Options{}, registered...)
	if err := store.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	tokenWithin(t, c, "app-0", 5*time.Second) // warm: L1 and Redis

	if err := r.proc.Cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.proc.Cmd.Process.Signal(syscall.SIGCONT) })

	_, hit := tokenWithin(t, c, "app-0", time.Second)
	var worst time.Duration
	for i := 1; i < apps-1; i++ { // cold: Redis times out, own fetch
		_, elapsed := tokenWithin(t, c, fmt.Sprintf("app-%d", i), 5*time.Second)
		worst = max(worst, elapsed)
	}
	t.Logf("redis SIGSTOPped: L1 hit %v; cold token via own fetch: worst %v (OpTimeout %v)", hit, worst, redisstore.DefaultOpTimeout)
	if hit > 10*time.Millisecond {
		t.Errorf("L1 hit took %v with Redis hung", hit)
	}
	if worst > 5*redisstore.DefaultOpTimeout {
		t.Errorf("cold token took %v with Redis hung, want within a few OpTimeouts", worst)
	}
	if n := logs.FilterMessageSnippet("token store unavailable").Len(); n != 1 {
		t.Errorf("%d outage warnings for %d refreshes, want 1", n, apps-2)
	}

	if err := r.proc.Cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	last := fmt.Sprintf("app-%d", apps-1)
	rec, _ := tokenWithin(t, c, last, 5*time.Second) // cold: through Redis again
	if logs.FilterMessage("token store recovered").Len() != 1 {
		t.Error("no recovery logged after SIGCONT")
	}
	raw := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer raw.Close()
	if n, err := raw.Exists(context.Background(), rec.ID).Result(); err != nil || n != 1 {
		t.Errorf("record %s not in Redis after SIGCONT (%d, %v)", rec.ID, n, err)
	}
}

// TestCacheRedisRestartedRejoins: Redis killed and restarted empty on the
// same port; the replica carries on meanwhile and a later refresh writes
// the record to the new Redis.
func TestCacheRedisRestartedRejoins(t *testing.T) {
	port := freePort(t)
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	proc := startRedisOnPort(t, port, dir)
	var calls atomic.Int64
	fetch := countingFetch("restart", &calls)
	c, _, logs := newReplicaCache(t, redisstore.Options{URL: "redis://" + addr, KeyPrefix: "restart:"}, tokencache.Options{},
		cacheApp("graph-api", "https://graph.microsoft.com/.default", fetch),
		cacheApp("orders-api", "api://orders/.default", fetch))
	first, _ := tokenWithin(t, c, "graph-api", 5*time.Second)

	proc.Stop(t)
	if _, elapsed := tokenWithin(t, c, "orders-api", 5*time.Second); elapsed > time.Second {
		t.Errorf("cold token with Redis down took %v", elapsed)
	}
	if n := logs.FilterMessageSnippet("token store unavailable").Len(); n != 1 {
		t.Errorf("%d outage warnings, want 1", n)
	}

	startRedisOnPort(t, port, dir)
	// A later refresh (forced by a purge, as an upstream 401 would) writes
	// the record to the restarted Redis.
	if !c.PurgeRejected(context.Background(), "graph-api", first.AccessToken) {
		t.Fatal("PurgeRejected = false")
	}
	rec, _ := tokenWithin(t, c, "graph-api", 5*time.Second)
	raw := redis.NewClient(&redis.Options{Addr: addr})
	defer raw.Close()
	if n, err := raw.Exists(context.Background(), rec.ID).Result(); err != nil || n != 1 {
		t.Errorf("record not written to the restarted Redis (%d, %v)", n, err)
	}
	if logs.FilterMessage("token store recovered").Len() != 1 {
		t.Error("no recovery logged")
	}
}
