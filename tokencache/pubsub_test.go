package tokencache

import (
	"context"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// TestLockLoserWakesOnPublish: with polling effectively off (an hour), a
// replica that lost the lock returns the winner's token, woken by the
// winner's announcement.
func TestLockLoserWakesOnPublish(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	release := make(chan struct{})
	winner := &scriptedFetcher{clock: clock, script: []fetchStep{{block: release}}}
	loser := &scriptedFetcher{clock: clock, script: []fetchStep{{}}}
	opts := Options{PollInterval: time.Hour, WaitTimeout: time.Minute}
	a, ha, _ := newClockCache(t, newMiniredisStore(t, mr), clock, opts, testApp("graph-api", winner.Fetch))
	lockLost := make(chan struct{}, 1)
	bStore := &spyStore{Store: newMiniredisStore(t, mr), onLockLost: func() { lockLost <- struct{}{} }}
	b, hb, _ := newClockCache(t, bStore, clock, opts, testApp("graph", loser.Fetch))

	aDone := make(chan error, 1)
	go func() {
		_, err := a.Token(t.Context(), "graph-api")
		aDone <- err
	}()
	receive(t, ha.fetching, "the winner's fetch")
	bDone := make(chan Record, 1)
	go func() {
		rec, err := b.Token(t.Context(), "graph")
		if err != nil {
			t.Error(err)
		}
		bDone <- rec
	}()
	receive(t, lockLost, "the loser to lose the lock")
	close(release)
	if err := receive(t, aDone, "the winner"); err != nil {
		t.Fatal(err)
	}
	if notified := receive(t, hb.woke, "the loser to wake"); !notified {
		t.Error("the loser woke by polling, want by the announcement")
	}
	if rec := receive(t, bDone, "the loser"); rec.AccessToken != "token-1" || loser.calls.Load() != 0 {
		t.Errorf("loser got %q after %d own fetches, want the winner's token-1 and none", rec.AccessToken, loser.calls.Load())
	}
}

// TestLockExtendedDuringSlowFetch: the holder's lock outlives LockTTL while
// its fetch runs, and is released after.
func TestLockExtendedDuringSlowFetch(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	release := make(chan struct{})
	f := &scriptedFetcher{clock: clock, script: []fetchStep{{block: release}}}
	app := testApp("graph-api", f.Fetch)
	c, h, _ := newClockCache(t, newMiniredisStore(t, mr), clock, Options{LockTTL: 15 * time.Second}, app)
	lockKey := LockKey(RecordKey(DefaultKeyPrefix, app))

	done := make(chan error, 1)
	go func() {
		_, err := c.Token(context.Background(), "graph-api")
		done <- err
	}()
	receive(t, h.fetching, "the fetch")
	owner, err := mr.Get(lockKey)
	if err != nil {
		t.Fatal(err)
	}
	mr.FastForward(10 * time.Second)
	clock.Advance(5 * time.Second) // LockTTL/3: the extension runs
	if ok := receive(t, h.extended, "the extension"); !ok {
		t.Fatal("the extension failed")
	}
	mr.FastForward(10 * time.Second) // 20s since the lock was taken
	if got, _ := mr.Get(lockKey); got != owner {
		t.Fatalf("lock holds %q after 20s, want the owner's (extended)", got)
	}
	if ttl := mr.TTL(lockKey); ttl != 5*time.Second {
		t.Errorf("lock TTL %v, want 5s left of the 15s extension", ttl)
	}
	close(release)
	if err := receive(t, done, "the token"); err != nil {
		t.Fatal(err)
	}
	if mr.Exists(lockKey) {
		t.Error("lock not released after the fetch")
	}
	// Extensions stopped with the fetch.
	clock.Advance(time.Minute)
	select {
	case <-h.extended:
		t.Error("extension after the fetch ended")
	default:
	}
}

// TestPublishWakesTheKeysWaiters: an announcement of this process wakes
// the waiters on the key's broadcast, also with a store no other process
// shares, and each broadcast wakes once.
func TestPublishWakesTheKeysWaiters(t *testing.T) {
	clock := newFakeClock()
	c, _, _ := newClockCache(t, NewMemoryStore(), clock, Options{})
	h := c.register(t, testApp("graph-api", newFakeFetcher(clock).Fetch))
	first, second := h.ks.updated(), h.ks.updated()
	c.publish(t.Context(), h.ks, nil)
	receive(t, first, "the announcement")
	receive(t, second, "the announcement")
	select {
	case <-h.ks.updated():
		t.Error("a broadcast taken after the announcement was already woken")
	default:
	}
}

// TestAnAnnouncementCarriesTheRecord: a replica's forced refresh reaches
// another replica holding the key in the announcement itself, sealed as
// in the store: it takes the new token without reading the store; a
// replica not using the key reads nothing at all.
func TestAnAnnouncementCarriesTheRecord(t *testing.T) {
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	mr := miniredis.RunT(t)
	reads := &spyStore{Store: newMiniredisStore(t, mr)}
	ca, _, _ := newClockCache(t, newMiniredisStore(t, mr), clock, Options{})
	cb, _, _ := newClockCache(t, reads, clock, Options{})
	a := ca.register(t, testApp("graph-api", f.Fetch))
	b := cb.register(t, testApp("graph-api", f.Fetch))

	if _, err := a.Token(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Refresh(t.Context()); err != nil { // announced while b does not use the key
		t.Fatal(err)
	}
	if got, err := b.Token(t.Context()); err != nil || got.AccessToken != "token-2" {
		t.Fatalf("b.Token = %q, %v; want token-2 from the store", got.AccessToken, err)
	}
	before := reads.calls.Load()
	if before != 1 {
		t.Errorf("b read the store %d times before using the key, want 1 (its own miss)", before)
	}
	clock.Advance(2 * time.Second) // forced refreshes within a second share one result
	if _, err := a.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "b taking token-3 from the announcement", func() bool {
		st := b.Status()
		return st.Record != nil && st.Record.AccessToken == "token-3"
	})
	if got := reads.calls.Load() - before; got != 0 {
		t.Errorf("b read the store %d times to follow a refresh, want 0 (the announcement carried the record)", got)
	}
}
