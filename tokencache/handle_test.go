package tokencache

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"
)

// TestHandlesOfOneKeyShareTheToken: a reload registers the application
// again (same key) before it releases the old handle: the new handle starts
// with the token, and the old one, released, keeps answering.
func TestHandlesOfOneKeyShareTheToken(t *testing.T) {
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	c, _, _ := newClockCache(t, nil, clock, Options{})
	old := c.register(t, testApp("graph-api", f.Fetch))
	first, err := old.Token(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	renamed := testApp("graph", f.Fetch) // the name is shown, not part of the key
	reloaded := c.register(t, renamed)
	got, err := reloaded.Token(t.Context())
	if err != nil || got.AccessToken != first.AccessToken || got.ApplicationName != "graph" || f.calls.Load() != 1 {
		t.Errorf("new handle: %v, %v after %d fetches; want the kept token as graph", got, err, f.calls.Load())
	}
	old.Release()
	old.Release() // twice is fine
	if got, err := old.Token(t.Context()); err != nil || got.AccessToken != first.AccessToken || got.ApplicationName != "graph-api" {
		t.Errorf("released handle: %v, %v; want its token as graph-api", got, err)
	}
	if p := clock.pending(); len(p) != 1 {
		t.Errorf("refresh timers %v, want the key's one: a handle is left", p)
	}
}

// TestRefreshesUseTheNewestHandle: after a reload that rotates the
// credential, the key's background refresh fetches with the new handle's
// Fetch, never the old one's, and reports to the new handle's OnFetch;
// once the new handle goes, the older one left takes over.
func TestRefreshesUseTheNewestHandle(t *testing.T) {
	clock := newFakeClock()
	oldFetch, newFetch := newFakeFetcher(clock), newFakeFetcher(clock)
	c, h, _ := newClockCache(t, nil, clock, Options{})
	old := c.register(t, credApp("graph-api", "cred-old", oldFetch.Fetch))
	if _, err := old.Token(t.Context()); err != nil {
		t.Fatal(err)
	}
	rotated := credApp("graph-api", "cred-new", newFetch.Fetch)
	outcomes := make(chan FetchOutcome, 10)
	rotated.OnFetch = func(o FetchOutcome) { outcomes <- o }
	reloaded := c.register(t, rotated)

	clock.Advance(30 * time.Minute)
	if err := receive(t, h.background, "the background refresh"); err != nil {
		t.Fatal(err)
	}
	if oldFetch.calls.Load() != 1 || newFetch.calls.Load() != 1 {
		t.Errorf("fetches old %d, new %d; want the refresh by the new handle", oldFetch.calls.Load(), newFetch.calls.Load())
	}
	if o := receive(t, outcomes, "the refresh's outcome"); o.Result != FetchSucceeded || o.Err != nil {
		t.Errorf("outcome %+v, want success", o)
	}
	if got, _ := old.Token(t.Context()); got.AccessToken != "token-1" || newFetch.calls.Load() != 1 {
		t.Errorf("old handle got %q, want the new handle's token-1", got.AccessToken)
	}

	reloaded.Release() // the new config failed to load: the old one serves on
	clock.Advance(30 * time.Minute)
	receive(t, h.background, "the second background refresh")
	if oldFetch.calls.Load() != 2 || newFetch.calls.Load() != 1 {
		t.Errorf("fetches old %d, new %d; want the old handle's fetch once the new one went", oldFetch.calls.Load(), newFetch.calls.Load())
	}
}

// TestCallersDoNotJoinARefreshOfAnOlderHandle: a refresh begun with the old
// credential is still running when a reload registers the new one; the new
// handle's callers start their own refresh, with the new credential,
// instead of sharing the old one's failure.
func TestCallersDoNotJoinARefreshOfAnOlderHandle(t *testing.T) {
	clock := newFakeClock()
	block, started := make(chan struct{}), make(chan struct{})
	oldFetch := &scriptedFetcher{clock: clock, script: []fetchStep{{block: block, started: started, err: &httpError{status: 401, permanent: true}}}}
	newFetch := &scriptedFetcher{clock: clock, script: []fetchStep{{}}}
	lost := make(chan struct{}, 10)
	store := &spyStore{Store: newMemoryStore(clock.Now), onLockLost: func() { lost <- struct{}{} }}
	c, _, _ := newClockCache(t, store, clock, Options{WaitTimeout: 10 * time.Second, PollInterval: 10 * time.Millisecond})
	old := c.register(t, credApp("graph-api", "cred-old", oldFetch.Fetch))

	oldErr := make(chan error, 1)
	go func() { _, err := old.Token(t.Context()); oldErr <- err }()
	receive(t, started, "the old handle's fetch")
	reloaded := c.register(t, credApp("graph-api", "cred-new", newFetch.Fetch))
	newResult := make(chan error, 1)
	go func() {
		rec, err := reloaded.Token(t.Context())
		if err == nil && rec.AccessToken != "token-1" {
			err = errors.New("not the new handle's token: " + rec.AccessToken)
		}
		newResult <- err
	}()
	receive(t, lost, "the new handle's refresh waiting for the lock") // its own flight, not the old one's
	close(block)
	if err := receive(t, oldErr, "the old handle's answer"); err == nil {
		t.Error("old handle: nil error, want its fetch's failure")
	}
	if err := receive(t, newResult, "the new handle's answer"); err != nil {
		t.Errorf("new handle: %v, want a token from its own fetch", err)
	}
	if newFetch.calls.Load() != 1 || oldFetch.calls.Load() != 1 {
		t.Errorf("fetches old %d, new %d; want 1 and 1", oldFetch.calls.Load(), newFetch.calls.Load())
	}
}

// TestAReleasedHandleAnswersUntilClose: a caller racing a release still
// gets a token, fetched if need be; once the Cache is closed, a caller
// whose L1 is empty gets a retryable 503 (ErrClosed), never a 404.
func TestAReleasedHandleAnswersUntilClose(t *testing.T) {
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	c, _, _ := newClockCache(t, nil, clock, Options{})
	h := c.register(t, testApp("graph-api", f.Fetch))
	first, err := h.Token(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	h.Release()
	if p := clock.pending(); len(p) != 0 {
		t.Errorf("refresh timers %v left after the last handle of the key went", p)
	}
	if !h.PurgeRejected(t.Context(), first.AccessToken) {
		t.Fatal("purge on a released handle did nothing")
	}
	second, err := h.Token(t.Context())
	if err != nil || second.AccessToken != "token-2" {
		t.Fatalf("released handle after a purge: %v, %v; want a fetched token-2", second, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got, err := h.Token(t.Context()); err != nil || got != second {
		t.Errorf("closed: %v, %v; want the token in L1", got, err)
	}
	clock.Advance(time.Hour)
	_, err = h.Token(t.Context())
	var coded *Error
	if !errors.As(err, &coded) || status(coded) != http.StatusServiceUnavailable || coded.RetryAfter <= 0 ||
		!errors.Is(err, ErrClosed) {
		t.Errorf("closed, L1 expired: %v, want a retryable 503 wrapping ErrClosed", err)
	}
	if f.calls.Load() != 2 {
		t.Errorf("%d fetches, want 2", f.calls.Load())
	}
}

// TestCloseAnswersWaitingCallersRetryably: a caller waiting for a refresh
// when the Cache closes gets a retryable 503, not the cancelled fetch's
// error.
func TestCloseAnswersWaitingCallersRetryably(t *testing.T) {
	clock := newFakeClock()
	started := make(chan struct{})
	f := &scriptedFetcher{clock: clock, script: []fetchStep{{block: make(chan struct{}), started: started}}}
	c, _, _ := newClockCache(t, nil, clock, Options{WaitTimeout: 10 * time.Second}, testApp("graph-api", f.Fetch))
	result := make(chan error, 1)
	go func() { _, err := c.Token(t.Context(), "graph-api"); result <- err }()
	receive(t, started, "the fetch")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	err := receive(t, result, "the caller's answer")
	var coded *Error
	if !errors.As(err, &coded) || status(coded) != http.StatusServiceUnavailable || coded.RetryAfter <= 0 || !errors.Is(err, ErrClosed) {
		t.Errorf("Token() = %v, want a retryable 503 wrapping ErrClosed", err)
	}
}

// TestRegisterAndReleaseConcurrentWithToken: reloads registering and
// releasing handles of a key in use, while callers hammer it, cost no
// fetch and fail no call.
func TestRegisterAndReleaseConcurrentWithToken(t *testing.T) {
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	c, _, _ := newClockCache(t, nil, clock, Options{}, testApp("graph-api", f.Fetch))
	current := c.handles["graph-api"]
	if _, err := current.Token(t.Context()); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				mu.Lock()
				h := current
				mu.Unlock()
				if _, err := h.Token(ctx); err != nil && ctx.Err() == nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for range 200 {
		next, err := c.Register(testApp("graph-api", f.Fetch))
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		previous := current
		current = next
		mu.Unlock()
		previous.Release()
	}
	cancel()
	wg.Wait()
	if n := f.calls.Load(); n != 1 {
		t.Errorf("%d fetches across 200 reloads of the same key, want 1", n)
	}
}

// TestOnFetchReportsEachOutcome: OnFetch is told each call of Fetch as the
// backoff classifies it, including a token the cache rejects.
func TestOnFetchReportsEachOutcome(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fetch func(clock *fakeClock) (Fetched, error)
		want  FetchResult
	}{
		{"success", func(c *fakeClock) (Fetched, error) {
			return Fetched{AccessToken: "t", ExpiresAt: c.Now().Add(time.Hour)}, nil
		}, FetchSucceeded},
		{"throttled", func(*fakeClock) (Fetched, error) { return Fetched{}, &httpError{status: 429, retryAfter: time.Second} }, FetchThrottled},
		{"5xx", func(*fakeClock) (Fetched, error) { return Fetched{}, &httpError{status: 503} }, FetchTransient},
		{"not sent", func(*fakeClock) (Fetched, error) { return Fetched{}, &httpError{status: 0} }, FetchTransient},
		{"wrong secret", func(*fakeClock) (Fetched, error) { return Fetched{}, &httpError{status: 401, permanent: true} }, FetchPermanent},
		{"token too short", func(c *fakeClock) (Fetched, error) {
			return Fetched{AccessToken: "t", ExpiresAt: c.Now().Add(time.Second)}, nil
		}, FetchTransient},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			app := testApp("graph-api", func(context.Context) (Fetched, error) { return tc.fetch(clock) })
			var outcomes []FetchOutcome
			app.OnFetch = func(o FetchOutcome) { outcomes = append(outcomes, o) }
			c, _ := newTestCache(t, nil, clock, app)
			_, err := c.Token(t.Context(), "graph-api")
			if len(outcomes) != 1 || outcomes[0].Result != tc.want || outcomes[0].Duration < 0 ||
				(tc.want == FetchSucceeded) != (outcomes[0].Err == nil) || (err == nil) != (outcomes[0].Err == nil) {
				t.Errorf("outcomes %+v after Token() = %v, want one %s", outcomes, err, tc.want)
			}
		})
	}
}

// TestAPendingHandleTakesOverOnlyOnceActivated: a config still loading
// (RegisterPending) never has a token requested with its credential while
// a running config shares the key; once activated (the config started), its
// credential is the one used. A key with only pending handles uses them.
func TestAPendingHandleTakesOverOnlyOnceActivated(t *testing.T) {
	clock := newFakeClock()
	runningFetch, loadingFetch := newFakeFetcher(clock), newFakeFetcher(clock)
	c, h, _ := newClockCache(t, nil, clock, Options{})
	running := c.register(t, credApp("graph-api", "cred-running", runningFetch.Fetch))
	if _, err := running.Token(t.Context()); err != nil {
		t.Fatal(err)
	}
	loading, err := c.RegisterPending(credApp("graph-api", "cred-loading", loadingFetch.Fetch))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(loading.Release)

	clock.Advance(30 * time.Minute)
	receive(t, h.background, "the background refresh while the new config loads")
	if runningFetch.calls.Load() != 2 || loadingFetch.calls.Load() != 0 {
		t.Fatalf("fetches running %d, loading %d; want the running config's credential", runningFetch.calls.Load(), loadingFetch.calls.Load())
	}
	if _, err := loading.Token(t.Context()); err != nil || loadingFetch.calls.Load() != 0 {
		t.Errorf("the pending handle's Token: %v after %d fetches of its own, want the key's token", err, loadingFetch.calls.Load())
	}

	loading.Activate()
	clock.Advance(30 * time.Minute)
	receive(t, h.background, "the background refresh after the new config started")
	if runningFetch.calls.Load() != 2 || loadingFetch.calls.Load() != 1 {
		t.Errorf("fetches running %d, loading %d; want the started config's credential", runningFetch.calls.Load(), loadingFetch.calls.Load())
	}

	// A key whose only handle is pending (a first config, or caddy validate)
	// is served by it.
	other := credApp("orders-api", "cred-alone", loadingFetch.Fetch)
	other.Scopes = []string{"api://orders/.default"}
	alone, err := c.RegisterPending(other)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(alone.Release)
	if _, err := alone.Token(t.Context()); err != nil || loadingFetch.calls.Load() != 2 {
		t.Errorf("a key with only a pending handle: %v after %d fetches", err, loadingFetch.calls.Load())
	}
}

// TestLosersPollLessAndLessOften: a replica waiting for another replica's
// lock, without announcements, reads the store after PollInterval, then
// twice as long each time: in 1 s of a 10 ms PollInterval, 7 polls, not
// 90 (14 store reads, not 182); a fleet's losers of a thousand locks do not read every key four
// times a second.
func TestLosersPollLessAndLessOften(t *testing.T) {
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	store := &spyStore{Store: newMemoryStore(clock.Now)} // no announcements from other processes
	c, _, _ := newClockCache(t, store, clock, Options{WaitTimeout: time.Second, PollInterval: 10 * time.Millisecond, LockTTL: 3 * time.Second})
	h := c.register(t, testApp("graph-api", f.Fetch))
	if _, ok, err := store.TryLock(t.Context(), h.ks.lockKey, time.Hour); err != nil || !ok {
		t.Fatalf("another replica's lock: %v, %v", ok, err)
	}
	reads := store.calls.Load()
	if _, err := h.Token(t.Context()); err == nil {
		t.Fatal("Token: a token while another replica holds the lock and announces nothing")
	}
	if got := store.calls.Load() - reads; got < 6 || got > 20 {
		t.Errorf("%d reads of the store in WaitTimeout, want about 14 (7 polls, 10, 20, 40... ms apart)", got)
	}
	if f.calls.Load() != 0 {
		t.Errorf("%d fetches, want none while the lock is held", f.calls.Load())
	}
}

// A caller that left before asking (a client that hung up) starts no token
// request, and always gets its context's error: the flight could finish
// before the caller looked, and then the answer was either, at random.
func TestACallerThatLeftStartsNoTokenRequest(t *testing.T) {
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	c, _, _ := newClockCache(t, NewMemoryStore(), clock, Options{}, testApp("graph-api", f.Fetch))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	for range 20 {
		if rec, err := c.Token(ctx, "graph-api"); !errors.Is(err, context.Canceled) {
			t.Fatalf("Token() with a cancelled context = %q, %v; want its error", rec.AccessToken, err)
		}
	}
	if n := f.calls.Load(); n != 0 {
		t.Errorf("%d token requests for callers that left, want 0", n)
	}
}
