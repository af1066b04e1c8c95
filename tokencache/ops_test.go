package tokencache

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// eventually polls cond for up to a second of real time: for what another
// replica does after a pub/sub announcement.
func eventually(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > time.Second {
			t.Fatalf("%s did not happen within 1s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// twoReplicas returns two caches sharing mr (one store each), both with app
// registered, on one fake clock.
func twoReplicas(t *testing.T, clock *fakeClock, fetch FetchFunc) (a, b *Handle, mr *miniredis.Miniredis) {
	t.Helper()
	mr = miniredis.RunT(t)
	ca, _, _ := newClockCache(t, newMiniredisStore(t, mr), clock, Options{})
	cb, _, _ := newClockCache(t, newMiniredisStore(t, mr), clock, Options{})
	return ca.register(t, testApp("graph-api", fetch)), cb.register(t, testApp("graph-api", fetch)), mr
}

func TestStatusShowsSourceNextRefreshAndFailure(t *testing.T) {
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	a, b, _ := twoReplicas(t, clock, f.Fetch)
	if st := a.Status(); st.Record != nil || st.Usable || st.Source != "" || st.Failure != nil || !st.NextRefresh.IsZero() {
		t.Fatalf("status before any token: %+v, want empty", st)
	}
	if _, err := a.Token(t.Context()); err != nil {
		t.Fatal(err)
	}
	st := a.Status()
	if st.Record == nil || !st.Usable || st.Source != SourceFetched || st.Record.ApplicationName != "graph-api" {
		t.Errorf("fetching replica: %+v, want a usable record fetched here", st)
	}
	if want := clock.Now().Add(30 * time.Minute); !st.NextRefresh.Equal(want) {
		t.Errorf("next refresh %v, want %v (half the lifetime, no jitter)", st.NextRefresh, want)
	}
	if a.Key() != RecordKey(DefaultKeyPrefix, testApp("graph-api", f.Fetch)) || a.Scope() != testScope {
		t.Errorf("key %q scope %q", a.Key(), a.Scope())
	}
	if _, err := b.Token(t.Context()); err != nil {
		t.Fatal(err)
	}
	if st := b.Status(); st.Source != SourceStore || f.calls.Load() != 1 {
		t.Errorf("other replica: source %q after %d fetches, want the store's record", st.Source, f.calls.Load())
	}

	failing := &scriptedFetcher{clock: clock, script: []fetchStep{{err: &classifiedError{}}}}
	c, _, _ := newClockCache(t, nil, clock, Options{})
	h := c.register(t, testApp("orders-api", failing.Fetch))
	if _, err := h.Token(t.Context()); err == nil {
		t.Fatal("want the fetch's error")
	}
	st = h.Status()
	var ce *classifiedError
	if st.Failure == nil || !st.Failure.Active || st.Failure.Permanent || st.Failure.Attempts != 1 ||
		!st.Failure.Until.After(clock.Now()) || !errors.As(st.Failure.Err, &ce) || st.Failure.Message == "" {
		t.Errorf("failure %+v, want an active transient backoff with its cause", st.Failure)
	}
}

func TestPrefetchFetchesWithoutACallerAndRetriesAfterFailures(t *testing.T) {
	clock := newFakeClock()
	f := &scriptedFetcher{clock: clock, script: []fetchStep{{err: &classifiedError{}}, {}}}
	c, hooks, _ := newClockCache(t, nil, clock, Options{})
	h := c.register(t, testApp("graph-api", f.Fetch))
	h.Prefetch()
	// The first refresh starts at a random point of PrefetchSpread (the
	// middle: the tests' random is 0.5), not at once.
	if st := h.Status(); st.NextRefresh.Sub(clock.Now()) != DefaultPrefetchSpread/2 || f.calls.Load() != 0 {
		t.Fatalf("after Prefetch: next refresh in %s after %d fetches, want in %s and none yet",
			st.NextRefresh.Sub(clock.Now()), f.calls.Load(), DefaultPrefetchSpread/2)
	}
	clock.Advance(DefaultPrefetchSpread / 2)
	if err := receive(t, hooks.background, "the prefetch"); err == nil {
		t.Fatal("the first prefetch should have failed")
	}
	st := h.Status()
	if st.Failure == nil || st.NextRefresh.IsZero() || st.NextRefresh.Before(st.Failure.Until) {
		t.Fatalf("after a failed prefetch: %+v, want a retry planned at the end of the backoff", st)
	}
	clock.Advance(st.NextRefresh.Sub(clock.Now()))
	if err := receive(t, hooks.background, "the retry"); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if st := h.Status(); !st.Usable || st.Failure != nil || f.calls.Load() != 2 {
		t.Errorf("after the retry: %+v after %d fetches, want a usable token and no failure", st, f.calls.Load())
	}
	// The token is there before the first caller: no fetch for it.
	if got, err := h.Token(t.Context()); err != nil || got.AccessToken != "token-2" || f.calls.Load() != 2 {
		t.Errorf("first Token: %q, %v after %d fetches, want the prefetched token-2", got.AccessToken, err, f.calls.Load())
	}
}

func TestRefreshReplacesTheTokenOnEveryReplica(t *testing.T) {
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	a, b, mr := twoReplicas(t, clock, f.Fetch)
	for _, h := range []*Handle{a, b} {
		if got, err := h.Token(t.Context()); err != nil || got.AccessToken != "token-1" {
			t.Fatalf("Token: %q, %v", got.AccessToken, err)
		}
	}
	got, err := a.Refresh(t.Context())
	if err != nil || got.AccessToken != "token-2" || f.calls.Load() != 2 {
		t.Fatalf("Refresh: %q, %v after %d fetches, want token-2 from one fetch", got.AccessToken, err, f.calls.Load())
	}
	stored, _ := mr.Get(a.Key())
	if stored == "" || !containsToken(stored, "token-2") {
		t.Error("the store does not hold the refreshed token")
	}
	took := eventually(t, "replica B taking the refreshed token", func() bool {
		rec, err := b.Token(t.Context())
		return err == nil && rec.AccessToken == "token-2"
	})
	t.Logf("replica B took the refreshed token after %s", took)
	if st := b.Status(); st.Source != SourceStore || f.calls.Load() != 2 {
		t.Errorf("replica B: source %q after %d fetches, want the store's token and no fetch", st.Source, f.calls.Load())
	}

	// Within a second of the last forced refresh, calls share it.
	clock.Advance(500 * time.Millisecond)
	again, err := b.Refresh(t.Context())
	if err != nil || f.calls.Load() != 3 {
		t.Fatalf("refresh on B: %v after %d fetches", err, f.calls.Load())
	}
	if again2, err := b.Refresh(t.Context()); err != nil || again2.AccessToken != again.AccessToken || f.calls.Load() != 3 {
		t.Errorf("second refresh within a second: %q, %v after %d fetches, want the first's token and no fetch",
			again2.AccessToken, err, f.calls.Load())
	}
	clock.Advance(time.Second)
	if later, err := b.Refresh(t.Context()); err != nil || later.AccessToken == again.AccessToken || f.calls.Load() != 4 {
		t.Errorf("refresh a second later: %q, %v after %d fetches, want a new token", later.AccessToken, err, f.calls.Load())
	}
}

func TestRefreshHonoursTheBackoff(t *testing.T) {
	clock := newFakeClock()
	f := &scriptedFetcher{clock: clock, script: []fetchStep{{}, {err: &classifiedError{retryAfter: 30 * time.Second}}}}
	a, b, _ := twoReplicas(t, clock, f.Fetch)
	if _, err := a.Token(t.Context()); err != nil {
		t.Fatal(err)
	}
	_, err := a.Refresh(t.Context())
	var coded *Error
	if !errors.As(err, &coded) || status(coded) != http.StatusServiceUnavailable || errors.Is(err, ErrPaused) || f.calls.Load() != 2 {
		t.Fatalf("refresh failing: %v after %d fetches, want the endpoint's throttling", err, f.calls.Load())
	}
	clock.Advance(2 * time.Second)
	_, err = a.Refresh(t.Context())
	if !errors.As(err, &coded) || !errors.Is(err, ErrPaused) || coded.RetryAfter < 27*time.Second || f.calls.Load() != 2 {
		t.Fatalf("refresh while backed off: %v (retry after %s) after %d fetches, want ErrPaused with the backoff's Retry-After and no fetch",
			err, coded.RetryAfter, f.calls.Load())
	}
	var ce *classifiedError
	if !errors.As(err, &ce) {
		t.Error("the paused error does not lead to the failure's cause")
	}
	// Another replica obeys the fleet's backoff, read from the store.
	if _, err := b.Refresh(t.Context()); !errors.Is(err, ErrPaused) || f.calls.Load() != 2 {
		t.Errorf("refresh on another replica: %v after %d fetches, want ErrPaused and no fetch", err, f.calls.Load())
	}
	// The current token is kept meanwhile.
	if got, err := a.Token(t.Context()); err != nil || got.AccessToken != "token-1" {
		t.Errorf("Token while backed off: %q, %v, want token-1", got.AccessToken, err)
	}
}

func TestDeleteIsFleetWide(t *testing.T) {
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	a, b, mr := twoReplicas(t, clock, f.Fetch)
	for _, h := range []*Handle{a, b} {
		if _, err := h.Token(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.DeleteEverywhere(t.Context()); err != nil {
		t.Fatal(err)
	}
	if mr.Exists(a.Key()) {
		t.Error("the record is still in the store")
	}
	if st := a.Status(); st.Record != nil || !st.NextRefresh.IsZero() {
		t.Errorf("replica A after delete: %+v, want no record and no refresh planned", st)
	}
	eventually(t, "replica B dropping its copy", func() bool { return b.Status().Record == nil })
	got, err := b.Token(t.Context())
	if err != nil || got.AccessToken != "token-2" || f.calls.Load() != 2 {
		t.Errorf("B after the purge: %q, %v after %d fetches, want a fresh token-2", got.AccessToken, err, f.calls.Load())
	}
	eventually(t, "replica A taking B's fresh token", func() bool {
		rec, err := a.Token(t.Context())
		return err == nil && rec.AccessToken == "token-2"
	})
	if n := f.calls.Load(); n != 2 {
		t.Errorf("%d fetches, want 2: A takes B's token", n)
	}
}

func containsToken(raw, token string) bool {
	return len(raw) > 0 && (len(token) == 0 || strings.Contains(raw, `"accessToken":"`+token+`"`))
}

// A Redis writer without the key who holds the refresh lock and puts an
// older sealed record back cannot make a forced refresh roll the replica
// back: the refresh waits out the lock and fetches a new token.
func TestForcedRefreshTakesNoOlderRecordPutBack(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	store := newEncryptedStore(t, mr, make([]byte, 32))
	c, _, _ := newClockCache(t, store, clock, Options{PollInterval: 10 * time.Millisecond, LockTTL: 100 * time.Millisecond},
		testApp("graph-api", f.Fetch))
	h := c.handles["graph-api"]
	key := h.Key()
	tokenIs(t, c, f, "token-1", 1)
	earlier, err := mr.Get(key) // sealed token-1, as a Redis reader sees it
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	if rec, err := h.Refresh(t.Context()); err != nil || rec.AccessToken != "token-2" {
		t.Fatalf("first forced refresh = %q, %v; want token-2", rec.AccessToken, err)
	}
	clock.Advance(2 * time.Second) // out of the coalescing second
	if err := mr.Set(LockKey(key), "attacker"); err != nil {
		t.Fatal(err)
	}
	mr.SetTTL(LockKey(key), 100*time.Millisecond) // a replica's lock: one longer is taken over
	if err := mr.Set(key, earlier); err != nil {
		t.Fatal(err)
	}
	if rec, err := h.Refresh(t.Context()); err != nil || rec.AccessToken != "token-3" {
		t.Fatalf("forced refresh with an older record put back = %q, %v; want a fetch of its own (token-3)", rec.AccessToken, err)
	}
	tokenIs(t, c, f, "token-3", 3)
}
