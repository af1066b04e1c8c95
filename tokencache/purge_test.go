package tokencache

import (
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

func TestPurge(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := &scriptedFetcher{clock: clock, script: []fetchStep{{}}}
	app := testApp("graph-api", f.Fetch)
	c, _, _ := newClockCache(t, newMiniredisStore(t, mr), clock, Options{}, app)
	key := RecordKey(DefaultKeyPrefix, app)
	ctx := t.Context()

	rec, err := c.Token(ctx, "graph-api")
	if err != nil {
		t.Fatal(err)
	}
	if c.PurgeRejected(ctx, "graph-api", "another-token") || c.PurgeRejected(ctx, "graph-api", "") {
		t.Fatal("PurgeRejected of a token not current, or of none, purged")
	}
	if !c.PurgeRejected(ctx, "graph-api", rec.AccessToken) {
		t.Fatal("PurgeRejected(current token) = false")
	}
	if mr.Exists(key) {
		t.Error("record still in the store after PurgeRejected")
	}
	if c.PurgeRejected(ctx, "graph-api", rec.AccessToken) {
		t.Error("second PurgeRejected of the same token purged again")
	}
	next, err := c.Token(ctx, "graph-api")
	if err != nil || next.AccessToken != "token-2" {
		t.Fatalf("Token() after PurgeRejected = %q, %v; want a fresh token-2", next.AccessToken, err)
	}
	if c.PurgeRejected(ctx, "graph-api", next.AccessToken) {
		t.Error("PurgeRejected within PurgeInterval of the last purged")
	}
	clock.Advance(DefaultPurgeInterval)
	if !c.PurgeRejected(ctx, "graph-api", next.AccessToken) {
		t.Error("PurgeRejected after PurgeInterval = false")
	}
}

// TestPurgeDeletesOnlyTheSameToken: a record another replica has already
// replaced is left alone, and taken by the next Token.
func TestPurgeDeletesOnlyTheSameToken(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := &scriptedFetcher{clock: clock, script: []fetchStep{{}}}
	app := testApp("graph-api", f.Fetch)
	store := newMiniredisStore(t, mr)
	c, _, _ := newClockCache(t, store, clock, Options{}, app)
	key := RecordKey(DefaultKeyPrefix, app)
	ctx := t.Context()
	rec, err := c.Token(ctx, "graph-api")
	if err != nil {
		t.Fatal(err)
	}
	replaced := rec
	replaced.AccessToken = "from-another-replica"
	if err := store.Set(ctx, key, &replaced, time.Hour); err != nil {
		t.Fatal(err)
	}
	if !c.PurgeRejected(ctx, "graph-api", rec.AccessToken) {
		t.Fatal("PurgeRejected = false")
	}
	if !mr.Exists(key) {
		t.Fatal("PurgeRejected deleted another replica's newer record")
	}
	got, err := c.Token(ctx, "graph-api")
	if err != nil || got.AccessToken != "from-another-replica" || f.calls.Load() != 1 {
		t.Errorf("Token() after PurgeRejected = %q, %v after %d fetches; want the other replica's, no fetch", got.AccessToken, err, f.calls.Load())
	}
}

// TestPurgedTokenInStoreIsNotTaken: a replica that purged a token does not
// take it back from a store that still holds it (written again by a
// replica that had not seen the 401).
func TestPurgedTokenInStoreIsNotTaken(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := &scriptedFetcher{clock: clock, script: []fetchStep{{}}}
	app := testApp("graph-api", f.Fetch)
	store := newMiniredisStore(t, mr)
	c, _, _ := newClockCache(t, store, clock, Options{}, app)
	ctx := t.Context()
	rec, _ := c.Token(ctx, "graph-api")
	c.PurgeRejected(ctx, "graph-api", rec.AccessToken)
	if err := store.Set(ctx, rec.ID, &rec, time.Hour); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Token(ctx, "graph-api"); got.AccessToken == rec.AccessToken {
		t.Error("took the purged token back from the store")
	}
}
