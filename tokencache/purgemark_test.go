package tokencache

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
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
	a, _, _ = cachingReplica(t, newEncryptedStore(t, mr, testKey(1)), clock, f, opts)
	b, _, dropsB = cachingReplica(t, newEncryptedStore(t, mr, testKey(1)), clock, f, opts)
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
// writer also holds the key's lock as a replica would (one with no expiry
// is taken over): replica b keeps answering at once.
func TestAReissuedTokenIsServedWhileAWriterHoldsTheLock(t *testing.T) {
	mr, clock, a, b, dropsB, f := reissuingReplicas(t, Options{WaitTimeout: 200 * time.Millisecond})
	key := a.handles["graph-api"].Key()
	clock.Advance(DefaultPurgeInterval)
	if err := mr.Set(LockKey(key), "held-by-the-writer"); err != nil {
		t.Fatal(err)
	}
	mr.SetTTL(LockKey(key), DefaultLockTTL)
	dropInStore(t, mr, key)
	if receive(t, dropsB, "b's answer to the deletion") {
		t.Error("replica b dropped its valid token")
	}
	tokenIs(t, b, f.fakeFetcher, "mi-token", 2)
}

// markFailingStore is a store whose purge mark writes fail (a timeout, a
// full Redis, an ACL without SET on the key) while the rest works.
type markFailingStore struct{ Store }

func (markFailingStore) SetPurgeMark(context.Context, string, []PurgedToken, time.Duration) error {
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

// cachingReplica is one replica on store whose application uses f and
// reports its store-driven drops, with opts (the first, if any) applied.
func cachingReplica(t *testing.T, store Store, clock *fakeClock, f *cachingFetcher, opts ...Options) (*testCache, Application, <-chan bool) {
	t.Helper()
	drops := make(chan bool, 100)
	app := testApp("graph-api", f.Fetch)
	app.OnStoreDrop = func(dropped bool) { drops <- dropped }
	c, _, _ := newClockCache(t, store, clock, append(opts, Options{})[0], app)
	return c, app, drops
}

// TestAPurgeThroughAReleasedHandleReachesOtherReplicas: replica A reloaded
// (old handle released, new one registered); B's forced refresh gets the
// same token back from a caching source (managed identity) and writes it
// in a newer record, which A adopts (rewritten) for its live handle only.
// A request still in flight on A's old config gets a 401 and purges the
// token through the old handle. The mark names the token as written up to
// the key's current record, so B drops it.
func TestAPurgeThroughAReleasedHandleReachesOtherReplicas(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := &cachingFetcher{fakeFetcher: newFakeFetcher(clock), expires: clock.Now().Add(time.Hour)}
	a, appA, _ := cachingReplica(t, newEncryptedStore(t, mr, testKey(1)), clock, f)
	b, _, dropsB := cachingReplica(t, newEncryptedStore(t, mr, testKey(1)), clock, f)
	key := a.handles["graph-api"].Key()

	tokenIs(t, a, f.fakeFetcher, "mi-token", 1)
	tokenIs(t, b, f.fakeFetcher, "mi-token", 1)

	// A reloads: a new handle, the old one released (still answering
	// requests in flight).
	old := a.handles["graph-api"]
	a.register(t, appA)
	old.Release()

	// B's forced refresh: the source hands the same token back, in a
	// newer record, which A adopts.
	clock.Advance(time.Second)
	first := current(a)
	if _, err := b.handles["graph-api"].Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a adopts the record written again", func() bool {
		rec := current(a)
		return rec != nil && rec.UpdatedAt.After(first.UpdatedAt)
	})

	// A request of the old config is answered 401: the old handle purges.
	if !old.PurgeRejected(t.Context(), "mi-token") {
		t.Fatal("PurgeRejected = false")
	}
	if _, err := mr.Get(key); err == nil {
		t.Fatal("the store still holds the record of the rejected token")
	}
	mr.Publish(UpdateChannel(key), "replica-a") // as A's failed refetch announces
	if !receive(t, dropsB, "b's answer to the deletion") {
		t.Error("replica b kept the token a downstream rejected on replica a (the mark names a's stale record only)")
	}
}

// lossyWatch is a store whose watcher misses the announcements of records
// written after since (Redis pub/sub delivers at most once: a reconnect
// loses messages).
type lossyWatch struct {
	Store
	since   time.Time
	dropped chan struct{}
}

func (s *lossyWatch) Watch(ctx context.Context, key, channel string) (<-chan *Record, func()) {
	in, cancel := s.Store.Watch(ctx, key, channel)
	if in == nil {
		return nil, cancel
	}
	out := make(chan *Record, 1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case rec := <-in:
				if rec != nil && rec.UpdatedAt.After(s.since) {
					s.dropped <- struct{}{}
					continue
				}
				select {
				case out <- rec:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, cancel
}

// TestAPurgeAfterAMissedRewriteReachesOtherReplicas: A misses the
// announcement of the same token written again in a newer record by B, so
// A's copy is older than B's and the store's; a 401 on A then purges with
// a mark naming only A's copy, and B keeps the rejected token. The mark names
// the store's record of the token too, so B drops it.
func TestAPurgeAfterAMissedRewriteReachesOtherReplicas(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := &cachingFetcher{fakeFetcher: newFakeFetcher(clock), expires: clock.Now().Add(time.Hour)}
	lossy := &lossyWatch{Store: newEncryptedStore(t, mr, testKey(1)), since: clock.Now(), dropped: make(chan struct{}, 10)}
	a, _, _ := cachingReplica(t, lossy, clock, f)
	b, _, dropsB := cachingReplica(t, newEncryptedStore(t, mr, testKey(1)), clock, f)
	key := a.handles["graph-api"].Key()

	tokenIs(t, b, f.fakeFetcher, "mi-token", 1)
	tokenIs(t, a, f.fakeFetcher, "mi-token", 1) // taken from the store
	clock.Advance(time.Second)
	if _, err := b.handles["graph-api"].Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	receive(t, lossy.dropped, "a's watcher losing the announcement")

	if !a.PurgeRejected(t.Context(), "graph-api", "mi-token") {
		t.Fatal("PurgeRejected = false")
	}
	if _, err := mr.Get(key); err == nil {
		t.Fatal("the store still holds the record of the rejected token")
	}
	mr.Publish(UpdateChannel(key), "replica-a")
	if !receive(t, dropsB, "b's answer to the deletion") {
		t.Error("replica b kept the token a downstream rejected on replica a (the mark names a's older copy only)")
	}
}

// TestADroppedTokenWrittenAgainIsTakenFromTheStore: a replica that dropped
// a token on a mark takes the same token written again in a later record
// (a managed identity's endpoint hands out the token it cached) from the
// store, without a token request of its own.
func TestADroppedTokenWrittenAgainIsTakenFromTheStore(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := &cachingFetcher{fakeFetcher: newFakeFetcher(clock), expires: clock.Now().Add(time.Hour)}
	a, _, _ := cachingReplica(t, newEncryptedStore(t, mr, testKey(1)), clock, f)
	b, _, dropsB := cachingReplica(t, newEncryptedStore(t, mr, testKey(1)), clock, f)
	key := a.handles["graph-api"].Key()
	tokenIs(t, a, f.fakeFetcher, "mi-token", 1)
	tokenIs(t, b, f.fakeFetcher, "mi-token", 1)
	if !a.PurgeRejected(t.Context(), "graph-api", "mi-token") {
		t.Fatal("PurgeRejected = false")
	}
	mr.Publish(UpdateChannel(key), "replica-a") // as A's failed refetch announces
	if !receive(t, dropsB, "b's drop") {
		t.Fatal("b kept the purged token")
	}
	clock.Advance(time.Second)
	tokenIs(t, a, f.fakeFetcher, "mi-token", 2) // written again in a new record
	rec, err := b.Token(t.Context(), "graph-api")
	if err != nil || rec.AccessToken != "mi-token" {
		t.Fatalf("b.Token() = %q, %v", rec.AccessToken, err)
	}
	if n := f.calls.Load(); n != 2 {
		t.Errorf("%d token requests; want 2 (b takes the record written again)", n)
	}
}

// TestRewrittenRacesFillsAndDrops: while replica b keeps writing the same token again (forced
// refreshes of a caching source), replica a's watcher adopts each record
// (rewritten) as a's requests, deletes and releases fill and clear the
// key: no race, no deadlock, and a ends holding the token or nothing.
func TestRewrittenRacesFillsAndDrops(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := &cachingFetcher{fakeFetcher: newFakeFetcher(clock), expires: clock.Now().Add(time.Hour)}
	a, appA, _ := cachingReplica(t, newEncryptedStore(t, mr, testKey(1)), clock, f)
	b, _, _ := cachingReplica(t, newEncryptedStore(t, mr, testKey(1)), clock, f)
	tokenIs(t, a, f.fakeFetcher, "mi-token", 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 50 {
			clock.Advance(2 * time.Second) // past the forced refreshes' coalescing
			_, _ = b.handles["graph-api"].Refresh(context.Background())
		}
	}()
	for i := 0; ; i++ {
		select {
		case <-done:
			if rec := current(a); rec != nil && rec.AccessToken != "mi-token" {
				t.Errorf("a holds %v", rec)
			}
			return
		default:
		}
		h := a.handles["graph-api"]
		switch i % 3 {
		case 0:
			_, _ = h.Token(t.Context())
		case 1:
			_ = h.DeleteEverywhere(t.Context())
		case 2:
			a.register(t, appA)
			h.Release()
		}
	}
}

// switchingFetcher hands out its current token (a caching source, as IMDS)
// until the test switches it.
type switchingFetcher struct {
	*fakeFetcher
	mu    sync.Mutex
	token string
}

func (f *switchingFetcher) Fetch(context.Context) (Fetched, error) {
	f.calls.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	return Fetched{AccessToken: f.token, ExpiresAt: f.clock.Now().Add(time.Hour)}, nil
}

// TestADroppedTokenIsNotTakenBackFromAnOlderRecord: b holds token tok-A
// in record R2 (the same token written again after R1). A 401 on a purges
// it with a mark; b drops it. A Redis writer without the key puts back the
// sealed R1 (same token, older write): b does not serve the purged token
// again.
func TestADroppedTokenIsNotTakenBackFromAnOlderRecord(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := &switchingFetcher{fakeFetcher: newFakeFetcher(clock), token: "tok-A"}
	replica := func() (*testCache, <-chan bool) {
		drops := make(chan bool, 100)
		app := testApp("graph-api", f.Fetch)
		app.OnStoreDrop = func(dropped bool) { drops <- dropped }
		c, _, _ := newClockCache(t, newEncryptedStore(t, mr, testKey(1)), clock, Options{}, app)
		return c, drops
	}
	a, _ := replica()
	b, dropsB := replica()
	key := a.handles["graph-api"].Key()
	tokenIs(t, a, f.fakeFetcher, "tok-A", 1)
	tokenIs(t, b, f.fakeFetcher, "tok-A", 1)
	first := current(b)
	r1, err := mr.Get(key) // the sealed R1, saved by the keyless writer
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	if _, err := a.handles["graph-api"].Refresh(t.Context()); err != nil { // tok-A written again: R2
		t.Fatal(err)
	}
	waitFor(t, "b adopts R2", func() bool { rec := current(b); return rec != nil && rec.UpdatedAt.After(first.UpdatedAt) })

	f.mu.Lock()
	f.token = "tok-B" // the source now hands out a new token
	f.mu.Unlock()
	if !a.PurgeRejected(t.Context(), "graph-api", "tok-A") {
		t.Fatal("PurgeRejected = false")
	}
	mr.Publish(UpdateChannel(key), "replica-a")
	if !receive(t, dropsB, "b's drop") {
		t.Fatal("b kept the purged token")
	}
	if err := mr.Set(key, r1); err != nil { // the keyless writer puts R1 back
		t.Fatal(err)
	}
	rec, err := b.Token(t.Context(), "graph-api")
	if err != nil || rec.AccessToken == "tok-A" {
		t.Errorf("b.Token() = %q (updated %v, R1 was %v), %v after %d fetches; want tok-B, not the purged token from the older record put back",
			rec.AccessToken, rec.UpdatedAt, first.UpdatedAt, err, f.calls.Load())
	}
}

// TestAPurgeReachesAReplicaThatMissedTheRewrite: b misses the announcement
// of the same token written again (R2 by a; pub/sub loses messages on a
// reconnect), so b holds R1. A 401 on a marks the token as written up to
// R2, which covers R1: b drops the rejected token.
func TestAPurgeReachesAReplicaThatMissedTheRewrite(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := &cachingFetcher{fakeFetcher: newFakeFetcher(clock), expires: clock.Now().Add(time.Hour)}
	lossy := &lossyWatch{Store: newEncryptedStore(t, mr, testKey(1)), since: clock.Now(), dropped: make(chan struct{}, 10)}
	a, _, _ := cachingReplica(t, newEncryptedStore(t, mr, testKey(1)), clock, f)
	b, _, dropsB := cachingReplica(t, lossy, clock, f)
	key := a.handles["graph-api"].Key()
	tokenIs(t, a, f.fakeFetcher, "mi-token", 1)
	tokenIs(t, b, f.fakeFetcher, "mi-token", 1)
	clock.Advance(time.Second)
	if _, err := a.handles["graph-api"].Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	receive(t, lossy.dropped, "b's watcher losing the announcement")
	if !a.PurgeRejected(t.Context(), "graph-api", "mi-token") {
		t.Fatal("PurgeRejected = false")
	}
	mr.Publish(UpdateChannel(key), "replica-a")
	if !receive(t, dropsB, "b's answer to the deletion") {
		t.Error("replica b kept the token a downstream rejected on replica a (the mark names R2 only; b holds R1)")
	}
}

// markFailingOnce fails its first purge mark write only.
type markFailingOnce struct {
	Store
	failed bool
}

func (s *markFailingOnce) SetPurgeMark(ctx context.Context, key string, purged []PurgedToken, ttl time.Duration) error {
	if !s.failed {
		s.failed = true
		return errors.New("SET of the purge mark failed")
	}
	return s.Store.SetPurgeMark(ctx, key, purged, ttl)
}

// TestARetriedDeleteEverywhereNamesTheRecordItKept: DELETE's mark write
// fails, so the record stays (an error: retry); the retry names it, and b
// drops the token.
func TestARetriedDeleteEverywhereNamesTheRecordItKept(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	a, _ := storeDropReplica(t, &markFailingOnce{Store: newEncryptedStore(t, mr, testKey(1))}, clock, f)
	b, dropsB := storeDropReplica(t, newEncryptedStore(t, mr, testKey(1)), clock, f)
	tokenIs(t, a, f, "token-1", 1)
	tokenIs(t, b, f, "token-1", 1)
	if err := a.handles["graph-api"].DeleteEverywhere(t.Context()); err == nil {
		t.Fatal("first DELETE = nil")
	}
	if _, err := mr.Get(a.handles["graph-api"].Key()); err != nil {
		t.Fatal("the first DELETE, without its mark, removed the record")
	}
	clock.Advance(time.Minute)
	if err := a.handles["graph-api"].DeleteEverywhere(t.Context()); err != nil {
		t.Fatalf("retried DELETE = %v", err)
	}
	if !receive(t, dropsB, "b's answer to the retried deletion") {
		t.Error("the retried DELETE answered success, yet replica b keeps the token")
	}
}

// getFailing fails Get while fail is set.
type getFailing struct {
	Store
	fail atomic.Bool
}

func (s *getFailing) Get(ctx context.Context, key string) (*Record, error) {
	if s.fail.Load() {
		return nil, errors.New("GET timed out")
	}
	return s.Store.Get(ctx, key)
}

// TestDeleteEverywhereWithAFailedReadKeepsTheRecord: an admin DELETE on a
// replica that holds no token for the key, whose read of the store fails,
// has nothing to name: it reports the failure and leaves the record for a
// retry, which b then drops.
func TestDeleteEverywhereWithAFailedReadKeepsTheRecord(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	store := &getFailing{Store: newEncryptedStore(t, mr, testKey(1))}
	a, _ := storeDropReplica(t, store, clock, f)
	b, dropsB := storeDropReplica(t, newEncryptedStore(t, mr, testKey(1)), clock, f)
	tokenIs(t, b, f, "token-1", 1)
	store.fail.Store(true)
	if err := a.handles["graph-api"].DeleteEverywhere(t.Context()); err == nil {
		t.Fatal("DeleteEverywhere = nil although it could not read what to name")
	}
	store.fail.Store(false)
	if err := a.handles["graph-api"].DeleteEverywhere(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !receive(t, dropsB, "b's answer to the deletion") {
		t.Error("replica b kept the token after the retried DELETE")
	}
}

// TestRecordsOfATokenHandedOutAgainOrderByWritesNotClocks: replica x's
// clock is 10 s ahead of y's. x writes the token, then y's forced refresh
// gets the same token back (a managed identity's) and writes it a
// millisecond after x's record, not at its own earlier clock, so x takes
// it; a 401 on y then purges it with a mark that covers x's record, and x
// drops the rejected token.
func TestRecordsOfATokenHandedOutAgainOrderByWritesNotClocks(t *testing.T) {
	mr := miniredis.RunT(t)
	clockY := newFakeClock()
	clockX := newFakeClock()
	clockX.Advance(10 * time.Second)
	f := &cachingFetcher{fakeFetcher: newFakeFetcher(clockY), expires: clockY.Now().Add(time.Hour)}
	x, _, dropsX := cachingReplica(t, newEncryptedStore(t, mr, testKey(1)), clockX, f)
	y, _, _ := cachingReplica(t, newEncryptedStore(t, mr, testKey(1)), clockY, f)
	key := x.handles["graph-api"].Key()
	tokenIs(t, x, f.fakeFetcher, "mi-token", 1)
	tokenIs(t, y, f.fakeFetcher, "mi-token", 1) // x's record, taken from the store
	first := current(x)
	if _, err := y.handles["graph-api"].Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := f.calls.Load(); n != 2 {
		t.Fatalf("%d token requests, want the forced refresh's", n)
	}
	if rewrite := current(y); !rewrite.UpdatedAt.After(first.UpdatedAt) {
		t.Fatalf("y wrote the token again at %v, before x's record of %v", rewrite.UpdatedAt, first.UpdatedAt)
	}
	waitFor(t, "x takes the record written again", func() bool { return current(x).UpdatedAt.After(first.UpdatedAt) })
	if !y.PurgeRejected(t.Context(), "graph-api", "mi-token") {
		t.Fatal("PurgeRejected = false")
	}
	mr.Publish(UpdateChannel(key), "replica-y")
	if !receive(t, dropsX, "x's answer to the deletion") {
		t.Error("replica x kept the token a downstream rejected on replica y")
	}
}

// TestATokenHandedOutAgainAfterAPurgeIsWrittenPastTheMark: replica x's
// clock is 10 s ahead. x writes the token and purges it after a 401; y and
// z drop it. y fetches the same token again (a managed identity's) and
// writes it past the mark, not at its own earlier clock: z takes that
// record without a token request of its own, and a Redis writer without
// the key who deletes and announces it makes z drop nothing.
func TestATokenHandedOutAgainAfterAPurgeIsWrittenPastTheMark(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	clockX := newFakeClock()
	clockX.Advance(10 * time.Second)
	f := &cachingFetcher{fakeFetcher: newFakeFetcher(clock), expires: clock.Now().Add(time.Hour)}
	x, _, _ := cachingReplica(t, newEncryptedStore(t, mr, testKey(1)), clockX, f)
	y, _, dropsY := cachingReplica(t, newEncryptedStore(t, mr, testKey(1)), clock, f)
	z, _, dropsZ := cachingReplica(t, newEncryptedStore(t, mr, testKey(1)), clock, f)
	key := x.handles["graph-api"].Key()
	for _, c := range []*testCache{x, y, z} {
		tokenIs(t, c, f.fakeFetcher, "mi-token", 1)
	}
	if !x.PurgeRejected(t.Context(), "graph-api", "mi-token") {
		t.Fatal("PurgeRejected = false")
	}
	mr.Publish(UpdateChannel(key), "replica-x")
	if !receive(t, dropsY, "y's drop") || !receive(t, dropsZ, "z's drop") {
		t.Fatal("y or z kept the purged token")
	}
	tokenIs(t, y, f.fakeFetcher, "mi-token", 2)
	tokenIs(t, z, f.fakeFetcher, "mi-token", 2) // y's record, not a request of z's own

	clock.Advance(DefaultPurgeInterval)
	dropInStore(t, mr, key)
	if receive(t, dropsZ, "z's answer to the deletion") {
		t.Error("a deletion without the key made z drop the token written again after the purge")
	}
}
