package tokencache

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// cachingFetcher is a token source that caches, as IMDS and App Service's
// managed identity endpoint do: every call returns the same token until it
// expires.
type cachingFetcher struct {
	*fakeFetcher
	expires time.Time
}

func (f *cachingFetcher) Fetch(context.Context) (Fetched, error) {
	f.calls.Add(1)
	return Fetched{AccessToken: "mi-token", ExpiresAt: f.expires}, nil
}

// reissuingReplicas are two replicas on mr (sealed) whose source hands the
// same token back, after a 401 on replica a purged it and a fetched it
// again: b has taken the record written again.
func reissuingReplicas(t *testing.T, opts Options) (mr *miniredis.Miniredis, clock *fakeClock, a, b *testCache, dropsB <-chan bool, f *cachingFetcher) {
	mr = miniredis.RunT(t)
	clock = newFakeClock()
	f = &cachingFetcher{fakeFetcher: newFakeFetcher(clock), expires: clock.Now().Add(time.Hour)}
	replica := func() (*testCache, <-chan bool) {
		drops := make(chan bool, 100)
		app := testApp("graph-api", f.Fetch)
		app.OnStoreDrop = func(dropped bool) { drops <- dropped }
		c, _, _ := newClockCache(t, newEncryptedStore(t, mr, testKey(1)), clock, opts, app)
		return c, drops
	}
	a, _ = replica()
	b, dropsB = replica()
	tokenIs(t, a, f.fakeFetcher, "mi-token", 1)
	tokenIs(t, b, f.fakeFetcher, "mi-token", 1)
	first := current(b)
	if !a.PurgeRejected(t.Context(), "graph-api", "mi-token") {
		t.Fatal("PurgeRejected = false")
	}
	clock.Advance(time.Second)
	tokenIs(t, a, f.fakeFetcher, "mi-token", 2)
	waitFor(t, "b takes the record written again", func() bool { return current(b).UpdatedAt.After(first.UpdatedAt) })
	return mr, clock, a, b, dropsB, f
}

// waitFor waits until cond holds, failing t after 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}

// TestAReissuedTokenIsNotMarked: a token source that hands a purged token
// back (managed identity) writes it again in a new record, which the purge
// mark does not name, so a Redis writer without the key who deletes and
// announces the record makes no replica drop it, round after round.
func TestAReissuedTokenIsNotMarked(t *testing.T) {
	mr, clock, a, b, dropsB, f := reissuingReplicas(t, Options{})
	key := a.handles["graph-api"].Key()
	for round := range 3 {
		clock.Advance(DefaultPurgeInterval)
		dropInStore(t, mr, key)
		if receive(t, dropsB, "b's answer to the deletion") {
			t.Fatalf("round %d: a deletion and announcement without the key made replica b drop its valid token", round)
		}
		tokenIs(t, b, f.fakeFetcher, "mi-token", 2)
	}
}

// TestAReissuedTokenIsServedWhileAWriterHoldsTheLock: as above, and the
// writer also holds the key's lock with no expiry: replica b keeps
// answering at once.
func TestAReissuedTokenIsServedWhileAWriterHoldsTheLock(t *testing.T) {
	mr, clock, a, b, dropsB, f := reissuingReplicas(t, Options{WaitTimeout: 200 * time.Millisecond})
	key := a.handles["graph-api"].Key()
	clock.Advance(DefaultPurgeInterval)
	if err := mr.Set(LockKey(key), "held-by-the-writer"); err != nil {
		t.Fatal(err)
	}
	dropInStore(t, mr, key)
	if receive(t, dropsB, "b's answer to the deletion") {
		t.Error("replica b dropped its valid token")
	}
	tokenIs(t, b, f.fakeFetcher, "mi-token", 2)
}

// markFailingStore is a store whose purge mark writes fail (a timeout, a
// full Redis, an ACL without SET on the key) while the rest works.
type markFailingStore struct{ Store }

func (markFailingStore) SetPurgeMark(context.Context, string, [][32]byte, time.Duration) error {
	return errors.New("SET of the purge mark failed")
}

// TestDeleteEverywhereFailsWithoutItsMark: when the purge mark cannot be
// written, the other replicas will keep the token, so DeleteEverywhere
// reports the store's failure (the admin API answers 503: retry).
func TestDeleteEverywhereFailsWithoutItsMark(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	a, _ := storeDropReplica(t, markFailingStore{newEncryptedStore(t, mr, testKey(1))}, clock, f)
	b, _ := storeDropReplica(t, newEncryptedStore(t, mr, testKey(1)), clock, f)
	tokenIs(t, b, f, "token-1", 1)
	if err := a.handles["graph-api"].DeleteEverywhere(t.Context()); err == nil {
		t.Error("DeleteEverywhere = nil although no purge mark could be written")
	}
}

// TestADroppedTokenPutBackIsNotTaken: a replica that dropped a token on a
// purge mark does not take it again when a Redis writer without the key
// puts back its earlier sealed record.
func TestADroppedTokenPutBackIsNotTaken(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	a, b, drops := sealedReplicas(t, mr, clock, f)
	key := a.handles["graph-api"].Key()
	tokenIs(t, a, f, "token-1", 1)
	tokenIs(t, b, f, "token-1", 1)
	earlier, err := mr.Get(key)
	if err != nil {
		t.Fatal(err)
	}
	if !a.PurgeRejected(t.Context(), "graph-api", "token-1") {
		t.Fatal("PurgeRejected = false")
	}
	mr.Publish(UpdateChannel(key), "replica-a") // as A's failed refetch announces
	if !receive(t, drops, "b's drop") {
		t.Fatal("replica b kept the purged token")
	}
	if err := mr.Set(key, earlier); err != nil {
		t.Fatal(err)
	}
	if rec, err := b.Token(t.Context(), "graph-api"); err != nil || rec.AccessToken == "token-1" {
		t.Errorf("b.Token() = %q, %v; want a token other than the purged one", rec.AccessToken, err)
	}
}
