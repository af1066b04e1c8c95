package tokencache

import (
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// storeDropReplica is one replica on mr whose application reports its
// store-driven drops on the returned channel.
func storeDropReplica(t *testing.T, mr *miniredis.Miniredis, clock *fakeClock, f *fakeFetcher) (*testCache, <-chan bool) {
	t.Helper()
	drops := make(chan bool, 100)
	app := testApp("graph-api", f.Fetch)
	app.OnStoreDrop = func(dropped bool) { drops <- dropped }
	c, _, _ := newClockCache(t, newMiniredisStore(t, mr), clock, Options{}, app)
	return c, drops
}

// dropInStore is what a Redis writer does to make replicas drop a token:
// delete the record and announce it.
func dropInStore(t *testing.T, mr *miniredis.Miniredis, key string) {
	t.Helper()
	mr.Del(key)
	mr.Publish(UpdateChannel(key), "another-replica")
}

// tokenIs checks that Token returns want after fetches fetches in all.
func tokenIs(t *testing.T, c *testCache, f *fakeFetcher, want string, fetches int64) {
	t.Helper()
	rec, err := c.Token(t.Context(), "graph-api")
	if err != nil || rec.AccessToken != want || f.calls.Load() != fetches {
		t.Fatalf("Token() = %q, %v after %d fetches; want %s after %d", rec.AccessToken, err, f.calls.Load(), want, fetches)
	}
}

// TestStoreDrivenDropsRefetchOncePerInterval: a Redis writer deleting a
// record and announcing it makes a replica drop its still-valid token at
// most once per PurgeInterval; within it the token is kept (and counted).
func TestStoreDrivenDropsRefetchOncePerInterval(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	c, drops := storeDropReplica(t, mr, clock, f)
	key := c.handles["graph-api"].Key()
	tokenIs(t, c, f, "token-1", 1)

	dropInStore(t, mr, key)
	if !receive(t, drops, "the first drop") {
		t.Fatal("the first store-driven drop was refused")
	}
	tokenIs(t, c, f, "token-2", 2)
	for range 5 {
		dropInStore(t, mr, key)
		if receive(t, drops, "a drop within the interval") {
			t.Fatal("a second store-driven drop within PurgeInterval was made")
		}
		tokenIs(t, c, f, "token-2", 2)
	}
	clock.Advance(DefaultPurgeInterval)
	dropInStore(t, mr, key)
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
	c, drops := storeDropReplica(t, mr, clock, f)
	key := c.handles["graph-api"].Key()
	tokenIs(t, c, f, "token-1", 1)
	if !c.PurgeRejected(t.Context(), "graph-api", "token-1") {
		t.Fatal("PurgeRejected = false")
	}
	tokenIs(t, c, f, "token-2", 2)
	dropInStore(t, mr, key)
	if receive(t, drops, "a drop after a purge") {
		t.Fatal("a store-driven drop within PurgeInterval of a purge was made")
	}
	tokenIs(t, c, f, "token-2", 2)

	clock.Advance(DefaultPurgeInterval)
	dropInStore(t, mr, key)
	if !receive(t, drops, "a drop after the interval") {
		t.Fatal("a store-driven drop after PurgeInterval was refused")
	}
	tokenIs(t, c, f, "token-3", 3)
	if c.PurgeRejected(t.Context(), "graph-api", "token-3") {
		t.Error("a purge within PurgeInterval of a store-driven drop was made")
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
