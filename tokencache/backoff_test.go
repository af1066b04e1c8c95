package tokencache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

func asError(err error, target **Error) bool { return errors.As(err, target) }

func TestBackoffDelaySequence(t *testing.T) {
	s := time.Second
	for _, tc := range []struct {
		name      string
		permanent bool
		want      []time.Duration // bases: random 0
	}{
		{"transient", false, []time.Duration{1 * s, 2 * s, 4 * s, 8 * s, 16 * s, 32 * s, 60 * s, 60 * s}},
		{"permanent", true, []time.Duration{5 * s, 10 * s, 20 * s, 40 * s, 80 * s, 160 * s, 300 * s, 300 * s}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i, base := range tc.want {
				attempt := i + 1
				if got := backoffDelay(attempt, tc.permanent, 0, 0); got != base {
					t.Errorf("attempt %d: %v, want %v", attempt, got, base)
				}
				hi := backoffDelay(attempt, tc.permanent, 0, 0.999999)
				cap := tc.want[len(tc.want)-1]
				if hi < base || hi > min(base*3/2, cap) {
					t.Errorf("attempt %d with most jitter: %v, want within [%v, %v]", attempt, hi, base, min(base*3/2, cap))
				}
			}
			if got := backoffDelay(1000, tc.permanent, 0, 0.5); got != tc.want[len(tc.want)-1] {
				t.Errorf("attempt 1000: %v, want the cap", got)
			}
		})
	}
	if got := backoffDelay(1, false, 30*s, 0); got != 30*s {
		t.Errorf("Retry-After 30s: %v, want 30s", got)
	}
	if got := backoffDelay(1, false, 24*time.Hour, 0); got != 10*time.Minute {
		t.Errorf("Retry-After 24h: %v, want capped at 10m", got)
	}
	if got := backoffDelay(6, false, 2*s, 0); got != 32*s {
		t.Errorf("Retry-After shorter than the backoff: %v, want the backoff 32s", got)
	}
}

func TestClassifyThroughWrapping(t *testing.T) {
	wrapped := fmt.Errorf("fetching: %w", &classifiedError{permanent: true, retryAfter: 7 * time.Second})
	for _, tc := range []struct {
		err        error
		want       FetchResult
		retryAfter time.Duration
	}{
		{nil, FetchSucceeded, 0},
		{wrapped, FetchPermanent, 7 * time.Second},
		{&classifiedError{retryAfter: time.Second}, FetchThrottled, time.Second},
		{&httpError{status: 500, retryAfter: time.Second}, FetchThrottled, time.Second},
		{&httpError{status: 503}, FetchTransient, 0},
		{&httpError{status: 0}, FetchTransient, 0}, // not sent, or no answer
		{errors.New("connection refused"), FetchTransient, 0},
		{errTokenTooShort, FetchTransient, 0},
	} {
		if got, ra := classify(tc.err); got != tc.want || ra != tc.retryAfter {
			t.Errorf("classify(%v) = %s, %v; want %s, %v", tc.err, got, ra, tc.want, tc.retryAfter)
		}
	}
}

func TestPermanentFailureIsNegativeCached(t *testing.T) {
	clock := newFakeClock()
	f := &scriptedFetcher{clock: clock, script: []fetchStep{{err: &classifiedError{permanent: true}}}}
	c, _, _ := newClockCache(t, nil, clock, Options{WaitTimeout: time.Hour}, testApp("graph-api", f.Fetch))
	c.random = func() float64 { return 0 }

	check := func(wantFetches int64) {
		t.Helper()
		_, err := c.Token(t.Context(), "graph-api")
		var coded *Error
		if !asError(err, &coded) || status(coded) != http.StatusBadGateway || coded.RetryAfter != 0 {
			t.Fatalf("Token() = %#v, want 502 without RetryAfter", err)
		}
		if n := f.calls.Load(); n != wantFetches {
			t.Fatalf("%d fetches, want %d", n, wantFetches)
		}
	}
	check(1)
	// 100 concurrent callers inside the negative-cache window: no fetch,
	// and an answer at once (WaitTimeout is an hour).
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			_, err := c.Token(t.Context(), "graph-api")
			var coded *Error
			if !asError(err, &coded) || status(coded) != http.StatusBadGateway ||
				!strings.Contains(coded.Message, "permanent=true") {
				t.Errorf("Token() = %v, want 502 with the failure's message", err)
			}
		})
	}
	wg.Wait()
	check(1)
	for _, wait := range []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second} {
		clock.Advance(wait - time.Millisecond)
		check(f.calls.Load()) // still backed off
		clock.Advance(time.Millisecond)
		check(f.calls.Load() + 1)
	}
}

func TestRetryAfterIsSharedThroughRedis(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	throttled := &classifiedError{retryAfter: 30 * time.Second}
	fa := &scriptedFetcher{clock: clock, script: []fetchStep{{err: throttled}}}
	fb := &scriptedFetcher{clock: clock, script: []fetchStep{{}}}
	// Different credentials: a Retry-After describes the endpoint, so it
	// binds every replica.
	appA, appB := credApp("graph-api", "cred-old", fa.Fetch), credApp("graph", "cred-new", fb.Fetch)
	a, _, _ := newClockCache(t, newMiniredisStore(t, mr), clock, Options{}, appA)
	b, _, _ := newClockCache(t, newMiniredisStore(t, mr), clock, Options{}, appB)

	_, err := a.Token(t.Context(), "graph-api")
	var coded *Error
	if !asError(err, &coded) || status(coded) != http.StatusServiceUnavailable || coded.RetryAfter != 30*time.Second {
		t.Fatalf("throttled Token() = %#v, want 503 with RetryAfter 30s", err)
	}
	backoffKey := BackoffKey(RecordKey(DefaultKeyPrefix, testApp("graph-api", nil)))
	raw, err := mr.Get(backoffKey)
	if err != nil {
		t.Fatalf("no backoff in redis: %v", err)
	}
	if ttl := mr.TTL(backoffKey); ttl != 30*time.Second {
		t.Errorf("backoff TTL %v, want 30s", ttl)
	}
	var stored Backoff
	if err := json.Unmarshal([]byte(raw), &stored); err != nil {
		t.Fatal(err)
	}
	if stored.Permanent || stored.Attempts != 1 || !stored.Until.Equal(clock.Now().Add(30*time.Second)) {
		t.Errorf("stored backoff %+v", stored)
	}
	// What older replicas read, during a rolling upgrade, is all there.
	var fields map[string]any
	if err := json.Unmarshal([]byte(raw), &fields); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"until", "permanent", "attempts", "message"} {
		if _, ok := fields[name]; !ok {
			t.Errorf("stored backoff %s lacks %q", raw, name)
		}
	}
	if strings.Contains(raw, "token-") {
		t.Errorf("backoff value %q holds a token", raw)
	}

	// The second replica obeys it: no fetch, 503 with RetryAfter, at once.
	for range 10 {
		_, err := b.Token(t.Context(), "graph")
		if !asError(err, &coded) || status(coded) != http.StatusServiceUnavailable || coded.RetryAfter <= 0 {
			t.Fatalf("second replica Token() = %#v, want 503 with RetryAfter", err)
		}
	}
	if n := fb.calls.Load(); n != 0 {
		t.Fatalf("second replica fetched %d times during the Retry-After, want 0", n)
	}
	clock.Advance(30 * time.Second)
	mr.FastForward(30 * time.Second)
	rec, err := b.Token(t.Context(), "graph")
	if err != nil || rec.AccessToken != "token-1" || fb.calls.Load() != 1 {
		t.Errorf("after the Retry-After: %q, %v after %d fetches", rec.AccessToken, err, fb.calls.Load())
	}
	if mr.Exists(backoffKey) {
		t.Error("backoff still in redis after a success")
	}
}

func TestTransientBackoffAnswers503(t *testing.T) {
	clock := newFakeClock()
	f := &scriptedFetcher{clock: clock, script: []fetchStep{{err: errors.New("connection reset")}, {}}}
	c, _, _ := newClockCache(t, nil, clock, Options{}, testApp("graph-api", f.Fetch))
	_, err := c.Token(t.Context(), "graph-api")
	var coded *Error
	if !asError(err, &coded) || status(coded) != http.StatusBadGateway || !strings.Contains(coded.Message, "connection reset") {
		t.Fatalf("failed fetch: %#v, want 502 with the cause", err)
	}
	_, err = c.Token(t.Context(), "graph-api")
	if !asError(err, &coded) || status(coded) != http.StatusServiceUnavailable || coded.RetryAfter != 1250*time.Millisecond ||
		!strings.Contains(coded.Message, "connection reset") || errors.Unwrap(err) == nil {
		t.Fatalf("during the backoff: %#v, want 503, RetryAfter 1.25s, the last failure's message and cause", err)
	}
	clock.Advance(1250 * time.Millisecond)
	if rec, err := c.Token(context.Background(), "graph-api"); err != nil || rec.AccessToken != "token-2" {
		t.Errorf("after the backoff: %q, %v", rec.AccessToken, err)
	}
}

// TestPlantedBackoffIsIgnored: a backoff written into the store by someone
// else than a replica (a Redis writer), with an end years away, pauses no
// token request.
func TestPlantedBackoffIsIgnored(t *testing.T) {
	clock := newFakeClock()
	store := NewMemoryStore()
	f := newFakeFetcher(clock)
	c, _, logs := newClockCache(t, store, clock, Options{}, testApp("graph-api", f.Fetch))
	key := RecordKey(DefaultKeyPrefix, testApp("graph-api", nil))
	planted := &Backoff{Until: clock.Now().Add(365 * 24 * time.Hour), Attempts: 1}
	if err := store.SetBackoff(t.Context(), BackoffKey(key), planted, 365*24*time.Hour); err != nil {
		t.Fatal(err)
	}
	rec, err := c.Token(t.Context(), "graph-api")
	if err != nil {
		t.Fatalf("Token() = %v, want a token", err)
	}
	if logs.FilterMessageSnippet("runs longer than any replica writes").Len() == 0 {
		t.Error("the planted backoff was not logged")
	}

	// One a replica could have written is obeyed.
	if !c.PurgeRejected(t.Context(), "graph-api", rec.AccessToken) {
		t.Fatal("the token was not purged")
	}
	planted.Until = clock.Now().Add(maxRetryAfter)
	if err := store.SetBackoff(t.Context(), BackoffKey(key), planted, maxRetryAfter); err != nil {
		t.Fatal(err)
	}
	_, err = c.Token(t.Context(), "graph-api")
	var coded *Error
	if !asError(err, &coded) || status(coded) != http.StatusServiceUnavailable {
		t.Fatalf("Token() = %v, want 503 while a backoff runs", err)
	}
}

// TestBackoffOfAnOlderReplicaIsObeyed: during a rolling upgrade, a backoff
// written by an older replica, with the fields no replica reads (code,
// reason, status), binds as before.
func TestBackoffOfAnOlderReplicaIsObeyed(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	c, _, _ := newClockCache(t, newMiniredisStore(t, mr), clock, Options{}, testApp("graph-api", f.Fetch))
	key := BackoffKey(RecordKey(DefaultKeyPrefix, testApp("graph-api", nil)))
	old := `{"until":"` + clock.Now().Add(30*time.Second).Format(time.RFC3339Nano) + `","code":"MICROSOFT_TOKEN_REQUEST_FAILED",` +
		`"reason":"retry_after","status":503,"permanent":false,"attempts":2,"message":"throttled"}`
	if err := mr.Set(key, old); err != nil {
		t.Fatal(err)
	}
	_, err := c.Token(t.Context(), "graph-api")
	var coded *Error
	if !asError(err, &coded) || status(coded) != http.StatusServiceUnavailable || coded.RetryAfter != 30*time.Second || f.calls.Load() != 0 {
		t.Errorf("Token() = %v after %d fetches, want 503 with RetryAfter 30s and no fetch", err, f.calls.Load())
	}
}

// TestPlantedAttemptsAreBounded: a shared backoff's count of attempts
// written by a Redis writer is shown and counted on within what a replica
// writes, never negative nor wrapped around.
func TestPlantedAttemptsAreBounded(t *testing.T) {
	for _, planted := range []int{math.MaxInt, -5} {
		clock := newFakeClock()
		store := NewMemoryStore()
		f := newFakeFetcher(clock)
		c, _, _ := newClockCache(t, store, clock, Options{}, testApp("graph-api", f.Fetch))
		key := BackoffKey(RecordKey(DefaultKeyPrefix, testApp("graph-api", nil)))
		b := &Backoff{Until: clock.Now().Add(time.Second), Attempts: planted}
		if err := store.SetBackoff(t.Context(), key, b, time.Second); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Token(t.Context(), "graph-api"); err == nil {
			t.Fatalf("attempts %d: Token() succeeded while a backoff runs", planted)
		}
		st := c.handles["graph-api"].Status()
		if st.Failure == nil || st.Failure.Attempts < 0 || st.Failure.Attempts > maxSharedAttempts {
			t.Errorf("attempts %d: status shows %+v, want 0..%d attempts", planted, st.Failure, maxSharedAttempts)
		}
	}
}
