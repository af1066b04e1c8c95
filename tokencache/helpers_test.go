package tokencache

import (
	"context"
	"fmt"
	"net/http"
	"slices"
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
	testCacheKey = "https://login.example/tenant-1/oauth2/v2.0/token\ntenant-1\nclient-1"
	testScope    = "https://graph.microsoft.com/.default"
)

// fakeClock is the Cache's clock in tests. Its timers fire, in the
// goroutine calling Advance, when Advance reaches them.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	clock   *fakeClock
	at      time.Time
	f       func()
	stopped bool
	fired   bool
}

func (t *fakeTimer) Stop() bool {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	if t.stopped || t.fired {
		return false
	}
	t.stopped = true
	return true
}

// AfterFunc implements Clock. A timer due now runs in its own goroutine.
func (c *fakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{clock: c, at: c.now.Add(d), f: f}
	if d <= 0 {
		t.fired = true
		go f()
		return t
	}
	c.timers = append(c.timers, t)
	return t
}

// pending returns the times of the timers not yet fired or stopped, sorted.
func (c *fakeClock) pending() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	var at []time.Time
	for _, t := range c.timers {
		if !t.stopped && !t.fired {
			at = append(at, t.at)
		}
	}
	slices.SortFunc(at, time.Time.Compare)
	return at
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock and runs the timers it reaches, in order.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		var due *fakeTimer
		for _, t := range c.timers {
			if !t.stopped && !t.fired && !t.at.After(c.now) && (due == nil || t.at.Before(due.at)) {
				due = t
			}
		}
		if due == nil {
			c.timers = slices.DeleteFunc(c.timers, func(t *fakeTimer) bool { return t.stopped || t.fired })
			c.mu.Unlock()
			return
		}
		due.fired = true
		c.mu.Unlock()
		due.f()
	}
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
	return Application{Name: name, CacheKey: testCacheKey, Scopes: []string{testScope}, Fetch: fetch}
}

// redisTestStore is what the engine's tests use of a redisstore.Store.
type redisTestStore interface {
	Store
	Client() redis.UniversalClient
	Ping(ctx context.Context) error
}

// redisOptions are the redisstore.Options the engine's tests set.
type redisOptions struct {
	URL            string
	KeyPrefix      string
	OpTimeout      time.Duration
	EncryptionKeys [][]byte
}

// newRedisStore is redisstore.New, set by redisstore_test.go (package
// tokencache_test): redisstore imports tokencache, so these tests cannot.
var newRedisStore func(redisOptions) (redisTestStore, error)

// newEncryptedStore returns a redisstore.Store on mr sealing with keys.
func newEncryptedStore(t testing.TB, mr *miniredis.Miniredis, keys ...[]byte) redisTestStore {
	t.Helper()
	store, err := newRedisStore(redisOptions{URL: "redis://" + mr.Addr(), EncryptionKeys: keys})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	return store
}

// newMiniredisStore returns a redisstore.Store on mr.
func newMiniredisStore(t testing.TB, mr *miniredis.Miniredis) redisTestStore {
	return newEncryptedStore(t, mr)
}

// status is the HTTP status the sidecar answers e with (caddymodule's
// answerFor): 503 while token requests are paused for a while, else 502.
func status(e *Error) int {
	if e.RetryAfter > 0 && !e.Permanent {
		return http.StatusServiceUnavailable
	}
	return http.StatusBadGateway
}

// realTimers is a fake clock's time with real timers, for tests that move
// time without running background refreshes.
type realTimers struct{ *fakeClock }

func (realTimers) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// testCache is a Cache with the handles of the applications registered
// through it, by name, so that tests can ask for a token by name.
type testCache struct {
	*Cache
	handles map[string]*Handle
}

// register registers app and keeps its handle as app.Name's.
func (c *testCache) register(t testing.TB, app Application) *Handle {
	t.Helper()
	h, err := c.Register(app)
	if err != nil {
		t.Fatal(err)
	}
	c.handles[app.Name] = h
	return h
}

// Token calls Token on the handle last registered as name.
func (c *testCache) Token(ctx context.Context, name string) (Record, error) {
	return c.handles[name].Token(ctx)
}

// PurgeRejected calls PurgeRejected on the handle last registered as name.
func (c *testCache) PurgeRejected(ctx context.Context, name, accessToken string) bool {
	return c.handles[name].PurgeRejected(ctx, accessToken)
}

// newTestCache returns a Cache on store judging time by clock (its timers
// real, so that they do not fire within a test), logging to an observer.
func newTestCache(t testing.TB, store Store, clock *fakeClock, apps ...Application) (*testCache, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	c, err := New(Options{Store: store, Clock: realTimers{clock}, Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	tc := &testCache{Cache: c, handles: make(map[string]*Handle)}
	for _, app := range apps {
		tc.register(t, app)
	}
	return tc, logs
}

// spyStore counts calls to a Store and reports lost locks.
type spyStore struct {
	Store
	calls      atomic.Int64
	onLockLost func()
}

func (s *spyStore) Get(ctx context.Context, key string) (*Record, error) {
	s.calls.Add(1)
	return s.Store.Get(ctx, key)
}

func (s *spyStore) Set(ctx context.Context, key string, rec *Record, ttl time.Duration) error {
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

// hooks collects the Cache's test hooks on channels.
type hooks struct {
	background chan error  // a background refresh ended
	extended   chan bool   // a lock extension was tried
	woke       chan bool   // a lock loser woke (true: by pub/sub)
	fetching   chan string // a lock holder is about to fetch
}

// newClockCache returns a Cache on store driven entirely by clock (timers
// too), with jitter fixed at its midpoint (none), hooks installed, and
// opts applied.
func newClockCache(t testing.TB, store Store, clock *fakeClock, opts Options, apps ...Application) (*testCache, *hooks, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	opts.Store, opts.Clock, opts.Logger = store, clock, zap.New(core)
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	h := &hooks{background: make(chan error, 100), extended: make(chan bool, 100),
		woke: make(chan bool, 100), fetching: make(chan string, 100)}
	c.random = func() float64 { return 0.5 }
	c.hooks = &testHooks{
		afterBackground:   func(_ string, err error) { h.background <- err },
		onLockExtended:    func(_ string, ok bool) { h.extended <- ok },
		onAwaitWake:       func(_ string, notified bool) { h.woke <- notified },
		onFetchInProgress: func(key string) { h.fetching <- key },
	}
	tc := &testCache{Cache: c, handles: make(map[string]*Handle)}
	for _, app := range apps {
		tc.register(t, app)
	}
	return tc, h, logs
}

// receive returns the next value on ch, failing the test after 10s.
func receive[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

// scriptedFetcher returns the results of its script in turn (then the
// last one again), each token valid for lifetime on clock.
type scriptedFetcher struct {
	clock    *fakeClock
	lifetime time.Duration
	mu       sync.Mutex
	script   []fetchStep
	calls    atomic.Int64
}

// fetchStep is one scripted fetch: an error, or a token with refreshIn;
// block, if set, holds the fetch until it is closed (or ctx ends).
type fetchStep struct {
	err       error
	refreshIn time.Duration
	block     chan struct{}
	started   chan struct{}
}

func (f *scriptedFetcher) Fetch(ctx context.Context) (Fetched, error) {
	n := int(f.calls.Add(1))
	f.mu.Lock()
	step := f.script[min(n, len(f.script))-1]
	f.mu.Unlock()
	if step.started != nil {
		close(step.started)
	}
	if step.block != nil {
		select {
		case <-step.block:
		case <-ctx.Done():
			return Fetched{}, ctx.Err()
		}
	}
	if step.err != nil {
		return Fetched{}, step.err
	}
	lifetime := f.lifetime
	if lifetime == 0 {
		lifetime = time.Hour
	}
	return Fetched{AccessToken: fmt.Sprintf("token-%d", n), ExpiresAt: f.clock.Now().Add(lifetime), RefreshIn: step.refreshIn}, nil
}

// classifiedError is a fetch error as the entra package's *RequestError
// classifies itself.
type classifiedError struct {
	permanent  bool
	retryAfter time.Duration
}

func (e *classifiedError) Error() string {
	return fmt.Sprintf("token endpoint failed (permanent=%v retry_after=%s)", e.permanent, e.retryAfter)
}
func (e *classifiedError) PermanentFailure() bool        { return e.permanent }
func (e *classifiedError) RetryAfterHint() time.Duration { return e.retryAfter }

// HTTPStatus is the status such an answer would have had.
func (e *classifiedError) HTTPStatus() int {
	switch {
	case e.permanent:
		return 401
	case e.retryAfter > 0:
		return 429
	}
	return 503
}
