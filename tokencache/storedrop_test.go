package tokencache

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// storeDropReplica is one replica on store whose application reports its
// store-driven drops on the returned channel.
func storeDropReplica(t *testing.T, store Store, clock *fakeClock, f *fakeFetcher) (*testCache, <-chan bool) {
	t.Helper()
	drops := make(chan bool, 100)
	app := testApp("graph-api", f.Fetch)
	app.OnStoreDrop = func(dropped bool) { drops <- dropped }
	c, _, _ := newClockCache(t, store, clock, Options{}, app)
	return c, drops
}

// dropInStore is what a Redis writer without the key does to make replicas
// drop a token: delete the record and announce it.
func dropInStore(t *testing.T, mr *miniredis.Miniredis, key string) {
	t.Helper()
	mr.Del(key)
	mr.Publish(UpdateChannel(key), "another-replica")
}

// purgeInStore is another replica's purge of c's record of token: its
// purge mark, then the deletion and its announcement.
func purgeInStore(t *testing.T, mr *miniredis.Miniredis, c *testCache, token string) {
	t.Helper()
	rec := current(c)
	if rec == nil || rec.AccessToken != token {
		t.Fatalf("the replica holds %v; want the record of %s", rec, token)
	}
	markPurgedIn(t, newMiniredisStore(t, mr), PurgeMarkKey(rec.ID), rec)
	dropInStore(t, mr, rec.ID)
}

// markPurgedIn writes a purge mark naming rec under markKey in store.
func markPurgedIn(t *testing.T, store Store, markKey string, rec *Record) {
	t.Helper()
	purged := []PurgedToken{{Fingerprint: sha256.Sum256([]byte(rec.AccessToken)), WrittenAt: rec.UpdatedAt}}
	if err := store.SetPurgeMark(t.Context(), markKey, purged, time.Hour); err != nil {
		t.Fatal(err)
	}
}

// tokenIs checks that Token returns want after fetches fetches in all.
func tokenIs(t *testing.T, c *testCache, f *fakeFetcher, want string, fetches int64) {
	t.Helper()
	rec, err := c.Token(t.Context(), "graph-api")
	if err != nil || rec.AccessToken != want || f.calls.Load() != fetches {
		t.Fatalf("Token() = %q, %v after %d fetches; want %s after %d", rec.AccessToken, err, f.calls.Load(), want, fetches)
	}
}

// TestStoreDrivenDropsRefetchOncePerInterval: other replicas' purges of a
// still-valid token make a replica drop it at most once per PurgeInterval;
// within it the token is kept (and counted).
func TestStoreDrivenDropsRefetchOncePerInterval(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	c, drops := storeDropReplica(t, newMiniredisStore(t, mr), clock, f)
	tokenIs(t, c, f, "token-1", 1)

	purgeInStore(t, mr, c, "token-1")
	if !receive(t, drops, "the first drop") {
		t.Fatal("the first store-driven drop was refused")
	}
	tokenIs(t, c, f, "token-2", 2)
	for range 5 {
		purgeInStore(t, mr, c, "token-2")
		if receive(t, drops, "a drop within the interval") {
			t.Fatal("a second store-driven drop within PurgeInterval was made")
		}
		tokenIs(t, c, f, "token-2", 2)
	}
	clock.Advance(DefaultPurgeInterval)
	purgeInStore(t, mr, c, "token-2")
	if !receive(t, drops, "a drop after the interval") {
		t.Fatal("a store-driven drop after PurgeInterval was refused")
	}
	tokenIs(t, c, f, "token-3", 3)
}

// TestPurgeAndStoreDropShareOneInterval: an upstream 401's purge and a
// drop the store asks for share one PurgeInterval per key, either way.
func TestPurgeAndStoreDropShareOneInterval(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	c, drops := storeDropReplica(t, newMiniredisStore(t, mr), clock, f)
	tokenIs(t, c, f, "token-1", 1)
	if !c.PurgeRejected(t.Context(), "graph-api", "token-1") {
		t.Fatal("PurgeRejected = false")
	}
	tokenIs(t, c, f, "token-2", 2)
	purgeInStore(t, mr, c, "token-2")
	if receive(t, drops, "a drop after a purge") {
		t.Fatal("a store-driven drop within PurgeInterval of a purge was made")
	}
	tokenIs(t, c, f, "token-2", 2)

	clock.Advance(DefaultPurgeInterval)
	purgeInStore(t, mr, c, "token-2")
	if !receive(t, drops, "a drop after the interval") {
		t.Fatal("a store-driven drop after PurgeInterval was refused")
	}
	tokenIs(t, c, f, "token-3", 3)
	if c.PurgeRejected(t.Context(), "graph-api", "token-3") {
		t.Error("a purge within PurgeInterval of a store-driven drop was made")
	}
}

// sealedReplicas are two replicas, a and b, on mr with records sealed
// under one key, sharing f; b reports its store-driven drops on drops.
func sealedReplicas(t *testing.T, mr *miniredis.Miniredis, clock *fakeClock, f *fakeFetcher) (a, b *testCache, drops <-chan bool) {
	t.Helper()
	a, _ = storeDropReplica(t, newEncryptedStore(t, mr, testKey(1)), clock, f)
	b, drops = storeDropReplica(t, newEncryptedStore(t, mr, testKey(1)), clock, f)
	return a, b, drops
}

// TestAPurgeDropsAnotherReplicasToken: a 401 on replica A purges the token
// with a purge mark naming it, so replica B drops it too once the deletion
// is announced (here as by A's next refresh when it writes no record).
func TestAPurgeDropsAnotherReplicasToken(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	a, b, drops := sealedReplicas(t, mr, clock, f)
	key := a.handles["graph-api"].Key()
	tokenIs(t, a, f, "token-1", 1)
	tokenIs(t, b, f, "token-1", 1)
	if !a.PurgeRejected(t.Context(), "graph-api", "token-1") {
		t.Fatal("PurgeRejected = false")
	}
	if ttl := mr.TTL(PurgeMarkKey(key)); ttl != time.Hour {
		t.Errorf("purge mark TTL %v, want the purged token's hour left", ttl)
	}
	mr.Publish(UpdateChannel(key), "replica-a")
	if !receive(t, drops, "B's drop") {
		t.Fatal("replica B kept the token replica A purged")
	}
	tokenIs(t, b, f, "token-2", 2)
}

// TestDeleteEverywhereDropsAnotherReplicasToken: the admin API's DELETE
// on replica A, which holds no token of its own, names the token of the
// record it removes, so replica B drops it.
func TestDeleteEverywhereDropsAnotherReplicasToken(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	a, b, drops := sealedReplicas(t, mr, clock, f)
	tokenIs(t, b, f, "token-1", 1)
	if err := a.handles["graph-api"].DeleteEverywhere(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !receive(t, drops, "B's drop") {
		t.Fatal("replica B kept the token replica A deleted everywhere")
	}
	tokenIs(t, b, f, "token-2", 2)
}

// TestUnmarkedDeletionsDropNothing: a Redis writer without the key who
// deletes a record and announces it, with no purge mark, a mark it forged
// or one put back from an earlier purge, makes no replica drop its valid
// token (kept and counted, whatever PurgeInterval allows); it keeps
// serving it without a token request.
func TestUnmarkedDeletionsDropNothing(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	a, b, drops := sealedReplicas(t, mr, clock, f)
	key := a.handles["graph-api"].Key()
	markKey := PurgeMarkKey(key)
	tokenIs(t, a, f, "token-1", 1)
	tokenIs(t, b, f, "token-1", 1)
	// An earlier purge, its mark kept: A purges token-1 and B follows.
	a.PurgeRejected(t.Context(), "graph-api", "token-1")
	earlier, err := mr.Get(markKey)
	if err != nil {
		t.Fatal(err)
	}
	mr.Publish(UpdateChannel(key), "replica-a")
	if !receive(t, drops, "B's drop of the purged token") {
		t.Fatal("replica B kept the token replica A purged")
	}
	tokenIs(t, b, f, "token-2", 2)

	for _, tc := range []struct {
		name  string
		plant func()
	}{
		{"no mark", func() { mr.Del(markKey) }},
		{"the earlier purge's mark put back", func() { _ = mr.Set(markKey, earlier) }},
		{"a plaintext mark", func() { markPurgedIn(t, newMiniredisStore(t, mr), markKey, current(b)) }},
		{"a mark sealed under another key", func() { markPurgedIn(t, newEncryptedStore(t, mr, testKey(2)), markKey, current(b)) }},
		{"another record's mark copied", func() {
			other := strings.TrimSuffix(markKey, ":purged") + "x:purged"
			markPurgedIn(t, newEncryptedStore(t, mr, testKey(1)), other, current(b))
			raw, _ := mr.Get(other)
			_ = mr.Set(markKey, raw)
		}},
	} {
		clock.Advance(DefaultPurgeInterval) // not the interval that keeps it
		tc.plant()
		dropInStore(t, mr, key)
		if receive(t, drops, tc.name) {
			t.Fatalf("%s: replica B dropped its valid token", tc.name)
		}
		tokenIs(t, b, f, "token-2", 2)
	}
}

// TestOversizedPurgeMarkIsIgnoredUnread: a purge mark over
// MaxPurgeMarkBytes naming the token (valid JSON, padded) is not read
// whole and names nothing.
func TestOversizedPurgeMarkIsIgnoredUnread(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	store := newMiniredisStore(t, mr)
	sizes := &replySizes{}
	store.Client().AddHook(sizes)
	c, drops := storeDropReplica(t, store, clock, f)
	key := c.handles["graph-api"].Key()
	tokenIs(t, c, f, "token-1", 1)
	rec := current(c)
	fingerprint := sha256.Sum256([]byte(rec.AccessToken))
	planted := `{"purged":[{"sha256":"` + hex.EncodeToString(fingerprint[:]) + `","written_at":"` +
		rec.UpdatedAt.Format(time.RFC3339Nano) + `"}]}` + strings.Repeat(" ", MaxPurgeMarkBytes)
	if err := mr.Set(PurgeMarkKey(key), planted); err != nil {
		t.Fatal(err)
	}
	dropInStore(t, mr, key)
	if receive(t, drops, "the store-driven drop") {
		t.Fatal("an oversized purge mark made the replica drop its token")
	}
	tokenIs(t, c, f, "token-1", 1)
	if n := sizes.longest.Load(); n > MaxPurgeMarkBytes+1 {
		t.Errorf("a %d-byte reply was read from Redis, over MaxPurgeMarkBytes+1", n)
	}
}

// TestAnOlderRecordPutBackIsNotTaken: a Redis writer who puts back an
// earlier record (sealed records too: it needs no key to copy one) and
// announces it makes no replica take it; taken, it would be past its
// refresh point and every replica would fetch at once, once per put-back.
func TestAnOlderRecordPutBackIsNotTaken(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	c, h, _ := newClockCache(t, newMiniredisStore(t, mr), clock, Options{}, testApp("graph-api", f.Fetch))
	key := c.handles["graph-api"].Key()
	tokenIs(t, c, f, "token-1", 1)
	earlier, err := mr.Get(key)
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(30 * time.Minute) // token-1's refresh point; still valid
	if err := receive(t, h.background, "the background refresh"); err != nil {
		t.Fatal(err)
	}
	tokenIs(t, c, f, "token-2", 2)

	for range 5 {
		if err := mr.Set(key, earlier); err != nil {
			t.Fatal(err)
		}
		c.followStore(t.Context(), c.keys[key], nil)
		tokenIs(t, c, f, "token-2", 2)
		if pending := clock.pending(); len(pending) != 1 || !pending[0].After(clock.Now().Add(20*time.Minute)) {
			t.Fatalf("refresh timers %v after the put-back, want one for token-2 (at +30m)", pending)
		}
	}
}

// current is the record c holds for graph-api.
func current(c *testCache) *Record {
	return c.handles["graph-api"].Status().Record
}
