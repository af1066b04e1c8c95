package tokencache

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

func TestTokenMissFetchesAndBuildsRecord(t *testing.T) {
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	app := testApp("graph-api", f.Fetch)
	c, _ := newTestCache(t, nil, clock, app)

	rec, err := c.Token(t.Context(), "graph-api")
	if err != nil {
		t.Fatal(err)
	}
	want := Record{
		ID:                   RecordKey(DefaultKeyPrefix, app),
		ApplicationName:      "graph-api",
		AccessToken:          "token-1",
		AccessTokenExpiresAt: clock.Now().Add(time.Hour),
		Scope:                testScope,
		CreatedAt:            clock.Now(),
		UpdatedAt:            clock.Now(),
	}
	if rec != want {
		t.Errorf("Token() = %+v, want %+v", rec, want)
	}
	if rec.AccessToken != "token-1" {
		t.Errorf("AccessToken = %q, want token-1", rec.AccessToken)
	}
	if n := f.calls.Load(); n != 1 {
		t.Errorf("fetch called %d times, want 1", n)
	}
}

func TestTokenHitDoesNoIO(t *testing.T) {
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	store := &spyStore{Store: newMemoryStore(clock.Now)}
	c, _ := newTestCache(t, store, clock, testApp("graph-api", f.Fetch))

	first, err := c.Token(t.Context(), "graph-api")
	if err != nil {
		t.Fatal(err)
	}
	storeCalls := store.calls.Load()
	clock.Advance(time.Hour - DefaultRefreshWindow - time.Second) // 61s left: still valid
	second, err := c.Token(t.Context(), "graph-api")
	if err != nil {
		t.Fatal(err)
	}
	if second != first {
		t.Errorf("second Token() = %+v, want the first %+v", second, first)
	}
	if n := f.calls.Load(); n != 1 {
		t.Errorf("fetch called %d times, want 1", n)
	}
	if n := store.calls.Load(); n != storeCalls {
		t.Errorf("a hit made %d store calls, want 0", n-storeCalls)
	}
}

func TestTokenRefreshInsideWindow(t *testing.T) {
	for _, tc := range []struct {
		name  string
		store func(t *testing.T, clock *fakeClock) Store
	}{
		{"memory", func(_ *testing.T, clock *fakeClock) Store { return newMemoryStore(clock.Now) }},
		{"redis", func(t *testing.T, _ *fakeClock) Store { return newMiniredisStore(t, miniredis.RunT(t)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			f := newFakeFetcher(clock)
			c, _ := newTestCache(t, tc.store(t, clock), clock, testApp("graph-api", f.Fetch))

			first, err := c.Token(t.Context(), "graph-api")
			if err != nil {
				t.Fatal(err)
			}
			clock.Advance(time.Hour - DefaultRefreshWindow) // exactly the window left: refresh
			second, err := c.Token(t.Context(), "graph-api")
			if err != nil {
				t.Fatal(err)
			}
			if second.AccessToken != "token-2" {
				t.Errorf("AccessToken = %q, want the refreshed token-2", second.AccessToken)
			}
			if second.ID != first.ID {
				t.Errorf("ID = %q, want the same record %q", second.ID, first.ID)
			}
			if !second.CreatedAt.Equal(first.CreatedAt) {
				t.Errorf("CreatedAt = %v, want kept %v", second.CreatedAt, first.CreatedAt)
			}
			if !second.UpdatedAt.Equal(clock.Now()) {
				t.Errorf("UpdatedAt = %v, want now %v", second.UpdatedAt, clock.Now())
			}
			if !second.AccessTokenExpiresAt.Equal(clock.Now().Add(time.Hour)) {
				t.Errorf("AccessTokenExpiresAt = %v, want %v", second.AccessTokenExpiresAt, clock.Now().Add(time.Hour))
			}
		})
	}
}

func TestTokenFetchErrorIsNotCached(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	cause := &testFetchError{detail: "AADSTS7000215: invalid client secret"}
	var calls int
	fetch := func(context.Context) (Fetched, error) {
		calls++
		return Fetched{}, cause
	}
	c, _ := newTestCache(t, newMiniredisStore(t, mr), clock, testApp("graph-api", fetch))

	for want := 1; want <= 2; want++ {
		_, err := c.Token(t.Context(), "graph-api")
		var coded *Error
		if !errors.As(err, &coded) || status(coded) != http.StatusBadGateway {
			t.Fatalf("Token() error = %v, want *Error (502)", err)
		}
		var typed *testFetchError
		if !errors.As(err, &typed) || typed != cause {
			t.Errorf("errors.As does not reach the fetch's error through %v", err)
		}
		if !strings.Contains(coded.Message, "AADSTS7000215") || !strings.Contains(coded.Message, `"graph-api"`) {
			t.Errorf("message %q lacks the cause or the application", coded.Message)
		}
		if calls != want {
			t.Errorf("fetch called %d times, want %d (failures must not be cached)", calls, want)
		}
		if key := RecordKey(DefaultKeyPrefix, testApp("graph-api", nil)); mr.Exists(key) {
			t.Errorf("store holds a record after a failure, want none")
		}
		// Past the backoff (at most 1.5s after one failure, 3s after two).
		clock.Advance(3 * time.Second)
		mr.FastForward(3 * time.Second)
	}
}

type testFetchError struct{ detail string }

func (e *testFetchError) Error() string { return "token endpoint: " + e.detail }

func TestTokenFetchCodedErrorPassesThrough(t *testing.T) {
	clock := newFakeClock()
	cause := &Error{Message: "client_id is not a GUID"}
	fetch := func(context.Context) (Fetched, error) { return Fetched{}, cause }
	c, _ := newTestCache(t, nil, clock, testApp("graph-api", fetch))
	if _, err := c.Token(t.Context(), "graph-api"); err != cause {
		t.Errorf("Token() error = %v, want the fetch's own %v", err, cause)
	}
}

func TestTokenRejectsTokensInsideWindow(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fetched func(now time.Time) Fetched
		wantErr error
	}{
		{"shorter than the window", func(now time.Time) Fetched {
			return Fetched{AccessToken: "short-lived-token", ExpiresAt: now.Add(30 * time.Second)}
		}, errTokenTooShort},
		{"exactly the window", func(now time.Time) Fetched {
			return Fetched{AccessToken: "short-lived-token", ExpiresAt: now.Add(DefaultRefreshWindow)}
		}, errTokenTooShort},
		{"expired", func(now time.Time) Fetched {
			return Fetched{AccessToken: "short-lived-token", ExpiresAt: now.Add(-time.Minute)}
		}, errTokenTooShort},
		{"empty", func(now time.Time) Fetched {
			return Fetched{ExpiresAt: now.Add(time.Hour)}
		}, errEmptyToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mr := miniredis.RunT(t)
			clock := newFakeClock()
			fetch := func(context.Context) (Fetched, error) { return tc.fetched(clock.Now()), nil }
			c, _ := newTestCache(t, newMiniredisStore(t, mr), clock, testApp("graph-api", fetch))
			_, err := c.Token(t.Context(), "graph-api")
			var coded *Error
			if !errors.As(err, &coded) {
				t.Fatalf("Token() error = %v, want *Error", err)
			}
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("Token() error = %v, want %v", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), "short-lived-token") {
				t.Errorf("error %q contains the token", err)
			}
			if key := RecordKey(DefaultKeyPrefix, testApp("graph-api", nil)); mr.Exists(key) {
				t.Errorf("store holds a record, want none")
			}
		})
	}
}

func TestTokenFetchPanicIsAnError(t *testing.T) {
	clock := newFakeClock()
	fetch := func(context.Context) (Fetched, error) { panic("boom") }
	c, _ := newTestCache(t, nil, clock, testApp("graph-api", fetch))
	_, err := c.Token(t.Context(), "graph-api")
	var coded *Error
	if !errors.As(err, &coded) {
		t.Fatalf("Token() error = %v, want *Error", err)
	}
}

func TestTokenSharedKeyReturnsNameAskedFor(t *testing.T) {
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	graph := testApp("graph-api", f.Fetch)
	alias := testApp("graph-alias", f.Fetch)
	c, _ := newTestCache(t, nil, clock, graph, alias)

	for _, name := range []string{"graph-api", "graph-alias"} {
		rec, err := c.Token(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		if rec.ApplicationName != name {
			t.Errorf("ApplicationName = %q, want %q", rec.ApplicationName, name)
		}
		if rec.AccessToken != "token-1" {
			t.Errorf("%s got %q, want the shared token-1", name, rec.AccessToken)
		}
	}
	if n := f.calls.Load(); n != 1 {
		t.Errorf("fetch called %d times, want 1 for two names with one key", n)
	}
}

func TestTokenCallerContextEndsPromptly(t *testing.T) {
	clock := newFakeClock()
	release := make(chan struct{})
	started := make(chan struct{})
	var calls int
	fetch := func(ctx context.Context) (Fetched, error) {
		calls++
		close(started)
		select {
		case <-release:
		case <-ctx.Done():
			return Fetched{}, ctx.Err()
		}
		return Fetched{AccessToken: "token-1", ExpiresAt: clock.Now().Add(time.Hour)}, nil
	}
	c, _ := newTestCache(t, nil, clock, testApp("graph-api", fetch))

	ctx, cancel := context.WithCancel(t.Context())
	errs := make(chan error, 1)
	go func() {
		_, err := c.Token(ctx, "graph-api")
		errs <- err
	}()
	<-started
	cancel()
	err := <-errs
	var coded *Error
	if !errors.As(err, &coded) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Token() error = %v, want *Error wrapping context.Canceled", err)
	}

	// The refresh carries on without the cancelled caller; a later caller
	// joins it or finds its result, and no second fetch runs.
	close(release)
	rec, err := c.Token(t.Context(), "graph-api")
	if err != nil {
		t.Fatal(err)
	}
	if rec.AccessToken != "token-1" || calls != 1 {
		t.Errorf("got %q after %d fetches, want token-1 after 1", rec.AccessToken, calls)
	}
}

func TestRegisterValidates(t *testing.T) {
	fetch := func(context.Context) (Fetched, error) { return Fetched{}, nil }
	for _, tc := range []struct {
		name string
		app  Application
	}{
		{"empty name", Application{CacheKey: testCacheKey, Scopes: []string{testScope}, Fetch: fetch}},
		{"empty identity", Application{Name: "a", Scopes: []string{testScope}, Fetch: fetch}},
		{"nil fetch", Application{Name: "a", CacheKey: testCacheKey, Scopes: []string{testScope}}},
		{"no scopes", Application{Name: "a", CacheKey: testCacheKey, Fetch: fetch}},
		{"empty scope", Application{Name: "a", CacheKey: testCacheKey, Scopes: []string{""}, Fetch: fetch}},
		{"scope with a space", Application{Name: "a", CacheKey: testCacheKey, Scopes: []string{"a b"}, Fetch: fetch}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := newTestCache(t, nil, newFakeClock())
			h, err := c.Register(tc.app)
			if err == nil || h != nil {
				t.Fatal("Register() = nil, want an error")
			}
			if !strings.HasPrefix(err.Error(), "tokencache: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

func TestNewRejectsNegativeDurations(t *testing.T) {
	if _, err := New(Options{RefreshWindow: -time.Second}); err == nil {
		t.Error("New() with a negative RefreshWindow = nil error")
	}
}

// TestTokenOneRefreshPerKeyInProcess: 100 callers of one Cache make one
// refresh, so one pass over the store, not one per caller.
func TestTokenOneRefreshPerKeyInProcess(t *testing.T) {
	const callers = 100
	clock := newFakeClock()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	asked := make(chan struct{}, callers)
	var calls atomic.Int64
	fetch := func(context.Context) (Fetched, error) {
		calls.Add(1)
		for range callers {
			select {
			case <-asked:
			case <-ctx.Done():
				return Fetched{}, errors.New("not every caller asked for a token")
			}
		}
		return Fetched{AccessToken: "token-1", ExpiresAt: clock.Now().Add(time.Hour)}, nil
	}
	store := &spyStore{Store: newMemoryStore(clock.Now)}
	c, _ := newTestCache(t, store, clock, testApp("graph-api", fetch))
	c.hooks = &testHooks{beforeFlight: func(string) { asked <- struct{}{} }}

	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			if rec, err := c.Token(ctx, "graph-api"); err != nil || rec.AccessToken != "token-1" {
				t.Errorf("Token() = %q, %v", rec.AccessToken, err)
			}
		})
	}
	wg.Wait()
	if n := calls.Load(); n != 1 {
		t.Errorf("fetch called %d times, want 1", n)
	}
	// Get, TryLock, Get again under the lock, Set, Unlock.
	if n := store.calls.Load(); n != 5 {
		t.Errorf("%d store calls, want the 5 of a single refresh", n)
	}
}
