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
