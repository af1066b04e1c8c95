package tokencache

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"go.uber.org/zap"
)

// gatedFetch is a FetchFunc whose calls block until open is closed,
// counting the calls in flight and the most seen at once.
type gatedFetch struct {
	open             chan struct{}
	inFlight, most   atomic.Int64
	calls            atomic.Int64
	started          chan struct{} // receives as each call starts
	tokenPrefix      string
	lifetime, window time.Duration
}

func newGatedFetch(prefix string) *gatedFetch {
	return &gatedFetch{open: make(chan struct{}), started: make(chan struct{}, 1000), tokenPrefix: prefix}
}

func (g *gatedFetch) Fetch(ctx context.Context) (Fetched, error) {
	n := g.inFlight.Add(1)
	defer g.inFlight.Add(-1)
	for m := g.most.Load(); n > m && !g.most.CompareAndSwap(m, n); m = g.most.Load() {
	}
	g.started <- struct{}{}
	select {
	case <-g.open:
	case <-ctx.Done():
		return Fetched{}, ctx.Err()
	}
	return Fetched{AccessToken: fmt.Sprintf("%s-%d", g.tokenPrefix, g.calls.Add(1)), ExpiresAt: time.Now().Add(time.Hour)}, nil
}

// slotCache is a Cache on store with FetchConcurrency n and no prefetch
// spread, registering one application per fetch under its own scope.
func slotCache(t *testing.T, store Store, n int, apps map[string]FetchFunc) (*Cache, map[string]*Handle) {
	t.Helper()
	c, err := New(Options{Store: store, FetchConcurrency: n, PrefetchSpread: -1, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	handles := map[string]*Handle{}
	for name, fetch := range apps {
		h, err := c.Register(Application{Name: name, CacheKey: testCacheKey, Scopes: []string{"api://" + name + "/.default"}, Fetch: fetch})
		if err != nil {
			t.Fatal(err)
		}
		handles[name] = h
	}
	return c, handles
}

// A warm-up of many keys makes at most half of FetchConcurrency token
// requests at once, and a request for another key is not queued behind
// it.
func TestWarmUpIsBoundedAndRequestsPassIt(t *testing.T) {
	warm, cold := newGatedFetch("warm"), newGatedFetch("cold")
	close(cold.open)
	apps := map[string]FetchFunc{"cold": cold.Fetch}
	for i := range 20 {
		apps[fmt.Sprintf("app-%d", i)] = warm.Fetch
	}
	_, handles := slotCache(t, NewMemoryStore(), 4, apps)
	for name, h := range handles {
		if name != "cold" {
			h.Prefetch()
		}
	}
	for range 2 {
		receive(t, warm.started, "a prefetch's token request")
	}
	select {
	case <-warm.started:
		t.Fatalf("a third prefetch started with FetchConcurrency 4 (%d in flight)", warm.inFlight.Load())
	case <-time.After(50 * time.Millisecond): // time for a third to start, were it allowed
	}

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := handles["cold"].Token(ctx); err != nil {
		t.Fatalf("a request behind a warm-up holding its slots: %v", err)
	}

	close(warm.open)
	for name, h := range handles {
		if _, err := h.Token(ctx); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if most := warm.most.Load(); most != 2 {
		t.Errorf("the warm-up made up to %d token requests at once, want 2 (half of 4)", most)
	}
}

// A replica claims a key's refresh lock only when it can fetch at once:
// with its slots held by other fetches, replica A does not take the lock
// of a key another replica B can fetch now, so B's request is answered by
// B's own fetch instead of waiting for A's slots, and A takes B's token
// (announced through Redis: two stores on one miniredis).
func TestAReplicaWithoutAFreeSlotLeavesTheLockToAnother(t *testing.T) {
	mr := miniredis.RunT(t)
	blocker, aFetch, bFetch := newGatedFetch("blocker"), newGatedFetch("a"), newGatedFetch("b")
	close(aFetch.open)
	close(bFetch.open)
	cacheA, a := slotCache(t, newMiniredisStore(t, mr), 1, map[string]FetchFunc{"blocker": blocker.Fetch, "shared": aFetch.Fetch})
	waiting := make(chan bool, 10)
	cacheA.hooks = &testHooks{beforeSlot: func(key string, full bool) {
		if key == a["shared"].Key() {
			waiting <- full
		}
	}}
	_, b := slotCache(t, newMiniredisStore(t, mr), 1, map[string]FetchFunc{"shared": bFetch.Fetch})
	defer close(blocker.open)

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	go func() { _, _ = a["blocker"].Token(ctx) }()
	receive(t, blocker.started, "the blocker's token request")

	var wg sync.WaitGroup
	var fromA Record
	var errA error
	wg.Go(func() { fromA, errA = a["shared"].Token(ctx) })
	if full := receive(t, waiting, "A's refresh waiting for a slot"); !full {
		t.Fatal("A's slot is free: the blocker does not hold it")
	}
	fromB, err := b["shared"].Token(ctx)
	if err != nil {
		t.Fatalf("B, whose slot is free: %v", err)
	}
	wg.Wait()
	if errA != nil {
		t.Fatalf("A: %v", errA)
	}
	if fromA.AccessToken != fromB.AccessToken || aFetch.calls.Load() != 0 {
		t.Errorf("A got %q (%d fetches of its own), want B's %q", fromA.AccessToken, aFetch.calls.Load(), fromB.AccessToken)
	}
}
