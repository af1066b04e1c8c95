package tokencache

import (
	"cmp"
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// blockingExtendStore holds each ExtendLock until released, after telling
// entered: an extension in flight when its holder stops and unlocks.
type blockingExtendStore struct {
	Store
	entered chan struct{}
	release chan struct{}
}

func (s *blockingExtendStore) ExtendLock(ctx context.Context, lockKey, owner string, ttl time.Duration) (bool, error) {
	s.entered <- struct{}{}
	<-s.release
	return s.Store.ExtendLock(ctx, lockKey, owner, ttl)
}

// An extension in flight when its holder stops extending and releases the
// lock finds it gone: that is no lost lock, and nothing is warned.
func TestAnExtensionThatMeetsItsLockReleasedWarnsOfNoLoss(t *testing.T) {
	clock := newFakeClock()
	store := &blockingExtendStore{Store: NewMemoryStore(), entered: make(chan struct{}, 1), release: make(chan struct{})}
	c, h, logs := newClockCache(t, store, clock, Options{})
	owner, ok, err := store.TryLock(t.Context(), "k:lock", time.Minute)
	if err != nil || !ok {
		t.Fatalf("TryLock = %v, %v", ok, err)
	}
	stop := c.extendLock("k", "k:lock", owner, 30*time.Second, "lock lost", "app")
	go clock.Advance(10 * time.Second) // the first extension starts
	receive(t, store.entered, "the extension")
	stop()
	if _, err := store.Unlock(t.Context(), "k:lock", owner); err != nil {
		t.Fatal(err)
	}
	close(store.release)
	if extended := receive(t, h.extended, "the extension's end"); extended {
		t.Fatal("the extension extended a released lock")
	}
	if n := logs.FilterMessage("lock lost").Len(); n != 0 {
		t.Errorf("a stopped extension warned %d time(s) that its lock was lost", n)
	}
}

// timingOutExtendStore makes its first ExtendLock take the whole time it
// is given on clock (as a Redis that does not answer), then fail; later
// ones report when they began and go through.
type timingOutExtendStore struct {
	Store
	clock    *fakeClock
	calls    int
	timeout  time.Duration // how long the first try takes on clock
	deadline time.Duration // the first try's time, as its context gives it
	began    chan time.Time
	proceed  chan struct{} // closed once the first try's end is seen
}

func (s *timingOutExtendStore) ExtendLock(ctx context.Context, lockKey, owner string, ttl time.Duration) (bool, error) {
	if s.calls++; s.calls == 1 {
		d, _ := ctx.Deadline()
		s.deadline = time.Until(d)
		s.clock.Advance(s.timeout)
		return false, context.DeadlineExceeded
	}
	s.began <- s.clock.Now()
	<-s.proceed // the first try's hook runs after it schedules this one
	return s.Store.ExtendLock(ctx, lockKey, owner, ttl)
}

// A lock lasts three beats: an extension that times out leaves the next
// one its whole beat before the lock lapses, instead of starting it only
// a beat after the timeout, when the lock is gone (an exchange lock lasts
// 1.5 s: a single Redis stall of 0.5 s let a second replica exchange).
func TestAnExtensionThatTimesOutLeavesTheNextItsBeatBeforeTheLockLapses(t *testing.T) {
	clock := newFakeClock()
	const ttl = 3 * time.Second
	store := &timingOutExtendStore{Store: NewMemoryStore(), clock: clock, timeout: ttl / 3,
		began: make(chan time.Time, 10), proceed: make(chan struct{})}
	c, h, _ := newClockCache(t, store, clock, Options{})
	owner, ok, err := store.TryLock(t.Context(), "k:lock", ttl)
	if err != nil || !ok {
		t.Fatalf("TryLock = %v, %v", ok, err)
	}
	locked := clock.Now()
	stop := c.extendLock("k", "k:lock", owner, ttl, "lock lost", "app")
	defer stop()
	clock.Advance(ttl / 3) // the first extension begins, and times out
	if store.deadline > ttl/3 || store.deadline < ttl/3-time.Second/2 {
		t.Errorf("the first extension was given %v, want a beat (%v)", store.deadline, ttl/3)
	}
	if extended := receive(t, h.extended, "the first extension's end"); extended {
		t.Fatal("the first extension succeeded")
	}
	close(store.proceed)
	// Without advancing the clock further: the next one is due at once.
	began := receive(t, store.began, "the second extension")
	if lapses := locked.Add(ttl); lapses.Sub(began) < ttl/3 {
		t.Errorf("the second extension began %v before the lock lapses, want a beat (%v) at least",
			lapses.Sub(began), ttl/3)
	}
	if extended := receive(t, h.extended, "the second extension's end"); !extended {
		t.Error("the second extension did not extend the lock")
	}
}

// failFastExtendStore fails every ExtendLock at once (Redis refusing
// connections), noting when each began.
type failFastExtendStore struct {
	Store
	clock *fakeClock
	mu    sync.Mutex
	began []time.Time
}

func (s *failFastExtendStore) ExtendLock(context.Context, string, string, time.Duration) (bool, error) {
	s.mu.Lock()
	s.began = append(s.began, s.clock.Now())
	s.mu.Unlock()
	return false, errors.New("connection refused")
}

// Extensions that fail at once are tried again a beat after the one before
// began, not in a loop.
func TestExtensionsThatFailAtOnceAreTriedOnceABeat(t *testing.T) {
	clock := newFakeClock()
	store := &failFastExtendStore{Store: NewMemoryStore(), clock: clock}
	c, _, _ := newClockCache(t, store, clock, Options{})
	const ttl = 1500 * time.Millisecond
	stop := c.extendLock("k", "k:lock", "owner", ttl, "lock lost", "app")
	defer stop()
	for range 100 {
		clock.Advance(ttl / 30) // 10 steps a beat, 10 beats
	}
	store.mu.Lock()
	defer store.mu.Unlock()
	if len(store.began) != 10 {
		t.Errorf("tries in 10 beats = %d, want 10", len(store.began))
	}
	for i := 1; i < len(store.began); i++ {
		if d := store.began[i].Sub(store.began[i-1]); d != ttl/3 {
			t.Errorf("try %d began %v after the one before, want a beat (%v)", i, d, ttl/3)
		}
	}
}

// slowStore makes every call take d on clock (a Redis that answers slowly
// but always, within a beat), the call's effect taking place at its answer.
type slowStore struct {
	Store
	clock  *fakeClock
	d      time.Duration
	extend time.Duration // ExtendLock's time instead of d, if set
}

func (s *slowStore) Get(ctx context.Context, key string) (*Record, error) {
	s.clock.Advance(s.d)
	return s.Store.Get(ctx, key)
}

func (s *slowStore) GetBackoff(ctx context.Context, key string) (*Backoff, error) {
	s.clock.Advance(s.d)
	return s.Store.GetBackoff(ctx, key)
}

func (s *slowStore) TryLock(ctx context.Context, lockKey string, ttl time.Duration) (string, bool, error) {
	s.clock.Advance(s.d)
	return s.Store.TryLock(ctx, lockKey, ttl)
}

func (s *slowStore) ExtendLock(ctx context.Context, lockKey, owner string, ttl time.Duration) (bool, error) {
	s.clock.Advance(cmp.Or(s.extend, s.d))
	return s.Store.ExtendLock(ctx, lockKey, owner, ttl)
}

// On a Redis that answers every call in 0.4 s, within an exchange lock's
// beat (0.5 s), a slow exchange (2 s) keeps its lock: the lock is extended
// from its taking, not only once the entry and the backoff were read
// again under it (0.8 s, after which the first extension came 0.2 s after
// the 1.5 s lock lapsed, and another replica could exchange too).
func TestAnExchangeLockIsExtendedFromItsTaking(t *testing.T) {
	clock := newFakeClock()
	store := &slowStore{Store: newMemoryStore(clock.Now), clock: clock, d: 400 * time.Millisecond}
	c, _, logs := newClockCache(t, store, clock, Options{})
	e := fleetExchanger(t, c.Cache)
	if !e.Shared() {
		t.Fatal("the exchanger does not share through the store")
	}
	slowExchange := func(context.Context) (Fetched, error) {
		for range 20 { // Entra takes 2 s
			clock.Advance(100 * time.Millisecond)
		}
		return Fetched{AccessToken: "downstream-token-1", ExpiresAt: clock.Now().Add(time.Hour)}, nil
	}
	if _, err := e.Exchange(t.Context(), testUserToken, testTenant, clock.Now().Add(2*time.Hour), slowExchange); err != nil {
		t.Fatal(err)
	}
	if n := logs.FilterMessageSnippet("exchange lock lost").Len(); n != 0 {
		t.Errorf("the exchange lock was lost (%d warnings) on a Redis answering every call in %v", n, store.d)
	}
}

// The same for a refresh lock (15 s, extended every 5 s): when the record
// and the backoff read again under the lock take 8 s each (re-sent behind
// a replica's burst, while an extension takes 1 s), the lock was extended
// only after them, past its end: it expired before it was released, and
// another replica could fetch too.
func TestARefreshLockIsExtendedFromItsTaking(t *testing.T) {
	clock := newFakeClock()
	store := &slowStore{Store: newMemoryStore(clock.Now), clock: clock, d: 8 * time.Second, extend: time.Second}
	fetch := func(context.Context) (Fetched, error) {
		return Fetched{AccessToken: "token-1", ExpiresAt: clock.Now().Add(time.Hour)}, nil
	}
	c, _, logs := newClockCache(t, store, clock, Options{}, testApp("graph-api", fetch))
	if _, err := c.Token(t.Context(), "graph-api"); err != nil {
		t.Fatal(err)
	}
	for _, lost := range []string{"refresh lock lost", "refresh lock expired before it was released"} {
		if n := logs.FilterMessageSnippet(lost).Len(); n != 0 {
			t.Errorf("%q (%d warnings) on a Redis answering reads in %v", lost, n, store.d)
		}
	}
}
