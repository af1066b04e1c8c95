package tokencache

import (
	"context"
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
	deadline time.Duration // the first try's time, as its context gives it
	began    chan time.Time
}

func (s *timingOutExtendStore) ExtendLock(ctx context.Context, lockKey, owner string, ttl time.Duration) (bool, error) {
	if s.calls++; s.calls == 1 {
		d, _ := ctx.Deadline()
		s.deadline = time.Until(d).Round(100 * time.Millisecond)
		s.clock.Advance(s.deadline)
		return false, context.DeadlineExceeded
	}
	s.began <- s.clock.Now()
	return s.Store.ExtendLock(ctx, lockKey, owner, ttl)
}

// A lock lasts three beats: an extension that times out leaves the next
// one its whole beat before the lock lapses, instead of starting it only
// a beat after the timeout, when the lock is gone (an exchange lock lasts
// 1.5 s: a single Redis stall of 0.5 s let a second replica exchange).
func TestAnExtensionThatTimesOutLeavesTheNextItsBeatBeforeTheLockLapses(t *testing.T) {
	clock := newFakeClock()
	store := &timingOutExtendStore{Store: NewMemoryStore(), clock: clock, began: make(chan time.Time, 10)}
	c, h, _ := newClockCache(t, store, clock, Options{})
	const ttl = 3 * time.Second
	owner, ok, err := store.TryLock(t.Context(), "k:lock", ttl)
	if err != nil || !ok {
		t.Fatalf("TryLock = %v, %v", ok, err)
	}
	locked := clock.Now()
	stop := c.extendLock("k", "k:lock", owner, ttl, "lock lost", "app")
	defer stop()
	clock.Advance(ttl / 3) // the first extension begins, and times out
	if store.deadline != ttl/3 {
		t.Errorf("the first extension was given %v, want a beat (%v)", store.deadline, ttl/3)
	}
	if extended := receive(t, h.extended, "the first extension's end"); extended {
		t.Fatal("the first extension succeeded")
	}
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
