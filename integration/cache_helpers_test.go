package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/internal/testproc"
	"github.com/caddy-entra/caddy-entra/tokencache"
	"github.com/caddy-entra/caddy-entra/tokencache/redisstore"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// lookPathOrSkip finds a redis binary (see testproc.RequireTool).
func lookPathOrSkip(t *testing.T, name string) string {
	t.Helper()
	return testproc.RequireTool(t, name, "apt-get install redis-server")
}

// startRedisOnPort starts redis-server on port with extra args, and waits
// until it answers PING.
func startRedisOnPort(t *testing.T, port int, dir string, extra ...string) *process {
	t.Helper()
	path := lookPathOrSkip(t, "redis-server")
	args := append([]string{"--port", fmt.Sprint(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir}, extra...)
	proc := startProcess(t, nil, path, args...)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	waitFor(t, "redis-server on "+addr, 10*time.Second, func() error {
		if proc.Exited() {
			return fmt.Errorf("redis-server exited: %s", proc.Output.String())
		}
		return pingRedis(addr)
	})
	return proc
}

// pingRedis sends PING over a raw connection.
func pingRedis(addr string) error { return testproc.PingRedis(addr) }

// countingOpTimeout is the OpTimeout of the tests that count a fleet's
// token requests exactly. Their thousands of callers in one process under
// -race, on a loaded CI machine whose redis-server shares the CPU, can leave
// Redis's answers unread for 0.3 s, which with the default 100 ms a replica
// rightly takes for a hung Redis (TestCacheRedisHungThenBack) and fetches
// on its own.
const countingOpTimeout = time.Second

// cacheApp returns an application named name whose record key depends on
// scope, fetching with fetch.
func cacheApp(name, scope string, fetch tokencache.FetchFunc) tokencache.Application {
	return tokencache.Application{Name: name, CacheKey: "https://login.example/t/oauth2/v2.0/token\nt\nc",
		Scopes: []string{scope}, Fetch: fetch}
}

// replicaCache is one replica's Cache with the handles of its
// applications, by name.
type replicaCache struct {
	*tokencache.Cache
	handles map[string]*tokencache.Handle
}

// Token calls Token on name's handle.
func (c *replicaCache) Token(ctx context.Context, name string) (tokencache.Record, error) {
	return c.handles[name].Token(ctx)
}

// PurgeRejected calls PurgeRejected on name's handle.
func (c *replicaCache) PurgeRejected(ctx context.Context, name, accessToken string) bool {
	return c.handles[name].PurgeRejected(ctx, accessToken)
}

// newReplicaCache returns a Cache (one replica's) on a new RedisStore with
// ropts and opts, logging to an observer; it is closed when the test ends.
func newReplicaCache(t *testing.T, ropts redisstore.Options, opts tokencache.Options, apps ...tokencache.Application) (*replicaCache, *redisstore.Store, *observer.ObservedLogs) {
	t.Helper()
	store, err := redisstore.New(ropts)
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.InfoLevel)
	opts.Store, opts.Logger = store, zap.New(core)
	c, err := tokencache.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	rc := &replicaCache{Cache: c, handles: make(map[string]*tokencache.Handle)}
	for _, app := range apps {
		h, err := c.Register(app)
		if err != nil {
			t.Fatal(err)
		}
		rc.handles[app.Name] = h
	}
	return rc, store, logs
}

// logWarnings logs, when t has failed, the warnings the replicas' caches
// logged (a store call that timed out makes a replica fetch on its own):
// their messages and errors, no token.
func logWarnings(t *testing.T, logs []*observer.ObservedLogs) {
	t.Helper()
	if !t.Failed() {
		return
	}
	for i, l := range logs {
		for _, e := range l.FilterLevelExact(zapcore.WarnLevel).All() {
			t.Logf("replica %d warned at %s: %s (%v)", i, e.Time.Format("15:04:05.000"), e.Message, e.ContextMap()["error"])
		}
	}
}

// tokenWithin calls Token with a deadline and returns the token and how
// long it took.
func tokenWithin(t *testing.T, c *replicaCache, name string, limit time.Duration) (tokencache.Record, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	start := time.Now()
	rec, err := c.Token(ctx, name)
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("Token(%s) after %v: %v", name, elapsed, err)
	}
	return rec, elapsed
}
