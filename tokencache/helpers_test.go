package tokencache

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

const (
	testIdentity = "https://login.example/tenant-1/oauth2/v2.0/token\ntenant-1\nclient-1"
	testScope    = "https://graph.microsoft.com/.default"
)

// fakeClock is the Cache's clock in tests.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// fakeFetcher hands out "token-N" valid for lifetime on clock.
type fakeFetcher struct {
	clock    *fakeClock
	lifetime time.Duration
	calls    atomic.Int64
}

func newFakeFetcher(clock *fakeClock) *fakeFetcher {
	return &fakeFetcher{clock: clock, lifetime: time.Hour}
}

func (f *fakeFetcher) Fetch(context.Context) (Fetched, error) {
	n := f.calls.Add(1)
	return Fetched{AccessToken: fmt.Sprintf("token-%d", n), ExpiresAt: f.clock.Now().Add(f.lifetime)}, nil
}

func testApp(name string, fetch FetchFunc) Application {
	return Application{Name: name, Identity: testIdentity, Scopes: []string{testScope}, Fetch: fetch}
}

// newMiniredisStore returns a RedisStore on mr.
func newMiniredisStore(t testing.TB, mr *miniredis.Miniredis) *RedisStore {
	t.Helper()
	client := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	store := NewRedisStoreFromClient(client, RedisOptions{})
	t.Cleanup(func() { _ = store.Close() })
	return store
}

// newTestCache returns a Cache on store with clock, logging to an observer.
func newTestCache(t testing.TB, store Store, clock *fakeClock, apps ...Application) (*Cache, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	c, err := New(Options{Store: store, Now: clock.Now, Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	for _, app := range apps {
		if err := c.Register(app); err != nil {
			t.Fatal(err)
		}
	}
	return c, logs
}

// spyStore counts calls to a Store and reports lost locks.
type spyStore struct {
	Store
	calls      atomic.Int64
	onLockLost func()
}

func (s *spyStore) Get(ctx context.Context, key string) (*ClientCredential, error) {
	s.calls.Add(1)
	return s.Store.Get(ctx, key)
}

func (s *spyStore) Set(ctx context.Context, key string, rec *ClientCredential, ttl time.Duration) error {
	s.calls.Add(1)
	return s.Store.Set(ctx, key, rec, ttl)
}

func (s *spyStore) TryLock(ctx context.Context, lockKey string, ttl time.Duration) (string, bool, error) {
	s.calls.Add(1)
	owner, ok, err := s.Store.TryLock(ctx, lockKey, ttl)
	if err == nil && !ok && s.onLockLost != nil {
		s.onLockLost()
	}
	return owner, ok, err
}

func (s *spyStore) Unlock(ctx context.Context, lockKey, owner string) (bool, error) {
	s.calls.Add(1)
	return s.Store.Unlock(ctx, lockKey, owner)
}
