package tokencache

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"go.uber.org/zap"
)

// A TryRefresh the endpoint refuses (a downstream's claims challenge whose
// claims it does not take) fails for its caller only: no backoff here or in
// the store, the current token still served, and the key's other refreshes
// (a purge's, another replica's forced one) fetch as before.
func TestTryRefreshFailureIsItsCallersAlone(t *testing.T) {
	clock := newFakeClock()
	f := &scriptedFetcher{clock: clock, script: []fetchStep{{}, {err: &classifiedError{permanent: true}}, {}}}
	a, b, mr := twoReplicas(t, clock, f.Fetch)
	for _, h := range []*Handle{a, b} {
		if got, err := h.Token(t.Context()); err != nil || got.AccessToken != "token-1" {
			t.Fatalf("Token: %q, %v", got.AccessToken, err)
		}
	}

	_, err := a.TryRefresh(t.Context())
	var coded *Error
	var cause *classifiedError
	if !errors.As(err, &coded) || !errors.As(err, &cause) || errors.Is(err, ErrPaused) || coded.RetryAfter != 0 || f.calls.Load() != 2 {
		t.Fatalf("refused TryRefresh: %v after %d fetches, want the endpoint's refusal, nothing paused", err, f.calls.Load())
	}
	if st := a.Status(); st.Failure != nil {
		t.Errorf("replica A records a failure after a refused TryRefresh: %+v", st.Failure.Backoff)
	}
	if mr.Exists(BackoffKey(a.Key())) {
		t.Error("a refused TryRefresh wrote the key's backoff to the store")
	}
	if got, err := a.Token(t.Context()); err != nil || got.AccessToken != "token-1" || f.calls.Load() != 2 {
		t.Errorf("Token after a refused TryRefresh: %q, %v after %d fetches, want token-1 still served", got.AccessToken, err, f.calls.Load())
	}

	// A Refresh within the second shares the TryRefresh's result: its
	// failure, still recording no backoff.
	clock.Advance(500 * time.Millisecond)
	if _, err := a.Refresh(t.Context()); err == nil || errors.Is(err, ErrPaused) || f.calls.Load() != 2 {
		t.Errorf("Refresh within the second: %v after %d fetches, want the shared failure and no fetch", err, f.calls.Load())
	}
	if st := a.Status(); st.Failure != nil || mr.Exists(BackoffKey(a.Key())) {
		t.Error("a Refresh sharing a TryRefresh's failure recorded a backoff")
	}

	// The application's ordinary refreshes go on, on both replicas.
	if !a.PurgeRejected(t.Context(), "token-1") {
		t.Fatal("PurgeRejected(token-1) did not purge")
	}
	if got, err := a.Token(t.Context()); err != nil || got.AccessToken != "token-3" || f.calls.Load() != 3 {
		t.Fatalf("Token after the purge: %q, %v after %d fetches, want a fresh token-3", got.AccessToken, err, f.calls.Load())
	}
	if got, err := b.Refresh(t.Context()); err != nil || got.AccessToken != "token-4" || f.calls.Load() != 4 {
		t.Errorf("Refresh on replica B: %q, %v after %d fetches, want token-4", got.AccessToken, err, f.calls.Load())
	}
}

// A TryRefresh refused on a replica whose store is down records no
// backoff of its own either; Token still serves the current token.
func TestTryRefreshFailureWithoutTheStoreRecordsNoBackoff(t *testing.T) {
	clock := newFakeClock()
	f := &scriptedFetcher{clock: clock, script: []fetchStep{{}, {err: &classifiedError{permanent: true}}, {}}}
	a, _, mr := twoReplicas(t, clock, f.Fetch)
	if _, err := a.Token(t.Context()); err != nil {
		t.Fatal(err)
	}
	mr.SetError("LOADING the store is down")
	if _, err := a.TryRefresh(t.Context()); err == nil || f.calls.Load() != 2 {
		t.Fatalf("TryRefresh: %v after %d fetches, want the endpoint's failure", err, f.calls.Load())
	}
	if st := a.Status(); st.Failure != nil {
		t.Errorf("a failed TryRefresh backed the key off: %+v", st.Failure.Backoff)
	}
	if got, err := a.Token(t.Context()); err != nil || got.AccessToken != "token-1" {
		t.Errorf("Token: %q, %v, want token-1 still served", got.AccessToken, err)
	}
	mr.SetError("")
	clock.Advance(2 * time.Second) // out of the forced refreshes' second
	if got, err := a.Refresh(t.Context()); err != nil || got.AccessToken != "token-3" {
		t.Errorf("Refresh after the store came back: %q, %v, want token-3", got.AccessToken, err)
	}
}

// A TryRefresh obeys a backoff another refresh recorded, as Refresh does.
func TestTryRefreshObeysARunningBackoff(t *testing.T) {
	clock := newFakeClock()
	f := &scriptedFetcher{clock: clock, script: []fetchStep{{err: &classifiedError{permanent: true}}, {}}}
	a, _, _ := twoReplicas(t, clock, f.Fetch)
	if _, err := a.Token(t.Context()); err == nil {
		t.Fatal("Token succeeded; want the scripted failure")
	}
	if _, err := a.TryRefresh(t.Context()); !errors.Is(err, ErrPaused) || f.calls.Load() != 1 {
		t.Errorf("TryRefresh while backed off: %v after %d fetches, want ErrPaused and no fetch", err, f.calls.Load())
	}
}

// TestTryRefreshThrottledBacksOff: only the endpoint's refusal is a
// TryRefresh's alone; a 429 backs off as a Refresh's does, so a downstream
// challenging every request sends no token request inside Retry-After.
func TestTryRefreshThrottledBacksOff(t *testing.T) {
	clock := newFakeClock()
	throttled := fetchStep{err: &classifiedError{retryAfter: 30 * time.Second}}
	f := &scriptedFetcher{clock: clock, script: []fetchStep{{}, throttled}}
	a, _, _ := twoReplicas(t, clock, f.Fetch)
	if _, err := a.Token(t.Context()); err != nil {
		t.Fatal(err)
	}
	_, err := a.TryRefresh(t.Context())
	var coded *Error
	if !errors.As(err, &coded) || coded.RetryAfter < 29*time.Second {
		t.Fatalf("throttled TryRefresh: %v, want an error with the endpoint's Retry-After", err)
	}
	for range 10 {
		clock.Advance(1100 * time.Millisecond)
		_, _ = a.TryRefresh(t.Context())
	}
	if n := f.calls.Load(); n != 2 {
		t.Errorf("%d token requests after the 429 within its Retry-After, want 0", n-2)
	}
}

// deadlineStore records the deadlines Drop's store calls get.
type deadlineStore struct {
	Store
	removeBy, publishBy time.Time
}

func (s *deadlineStore) RemoveRecord(ctx context.Context, key string) error {
	s.removeBy, _ = ctx.Deadline()
	return s.Store.RemoveRecord(ctx, key)
}

func (s *deadlineStore) Publish(ctx context.Context, key, channel string, rec *Record) error {
	s.publishBy, _ = ctx.Deadline()
	return s.Store.Publish(ctx, key, channel, rec)
}

// TestDropsStoreCallsShareOneBudget: Drop runs in the request; its removal
// and its announcement share one LockTTL, not one each.
func TestDropsStoreCallsShareOneBudget(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	store := &deadlineStore{Store: newEncryptedStore(t, mr, []byte("0123456789abcdef0123456789abcdef"))}
	c, err := New(Options{Store: store, Clock: realTimers{clock}, Logger: zap.NewNop(), LockTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	e := fleetExchanger(t, c)
	if !e.Drop(t.Context(), testUserToken, "") {
		t.Fatal("nothing dropped")
	}
	if store.removeBy.IsZero() || !store.publishBy.Equal(store.removeBy) {
		t.Errorf("removal due %v, announcement due %v: want one deadline for both", store.removeBy, store.publishBy)
	}
}

// A TryRefresh's caller waits WaitTimeout at most, as Token's: a slow
// token endpoint (or a lock another replica holds) does not hold the
// request it answers; the refresh goes on and its token is kept.
func TestTryRefreshWaitsWaitTimeoutAtMost(t *testing.T) {
	release := make(chan struct{})
	var calls atomic.Int64
	fetch := func(ctx context.Context) (Fetched, error) {
		if calls.Add(1) > 1 {
			<-release
		}
		return Fetched{AccessToken: fmt.Sprintf("token-%d", calls.Load()), ExpiresAt: time.Now().Add(time.Hour)}, nil
	}
	c, err := New(Options{Logger: zap.NewNop(), WaitTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h, err := c.Register(testApp("graph-api", fetch))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Token(t.Context()); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := h.TryRefresh(t.Context())
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("TryRefresh with the fetch held: %v, want a timeout", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("TryRefresh waited on the held fetch past WaitTimeout")
	}
	close(release)
	if got, err := h.Refresh(t.Context()); err != nil || got.AccessToken != "token-2" || calls.Load() != 2 {
		t.Errorf("Refresh after the timeout: %q, %v after %d fetches, want the TryRefresh's token-2", got.AccessToken, err, calls.Load())
	}
}
