package tokencache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// httpError is a fetch error as the entra package's *RequestError: it
// classifies itself and tells the HTTP status of the answer (0: none).
type httpError struct {
	status     int
	permanent  bool
	retryAfter time.Duration
}

func (e *httpError) Error() string {
	return fmt.Sprintf("token endpoint failed (status %d, permanent=%v)", e.status, e.permanent)
}
func (e *httpError) PermanentFailure() bool        { return e.permanent }
func (e *httpError) RetryAfterHint() time.Duration { return e.retryAfter }
func (e *httpError) HTTPStatus() int               { return e.status }

// credApp is testApp with a fixed credential fingerprint.
func credApp(name, credentialID string, fetch FetchFunc) Application {
	app := testApp(name, fetch)
	app.CredentialIDFunc = func() string { return credentialID }
	return app
}

// storedBackoff returns the backoff in mr for testApp's key, nil if none.
func storedBackoff(t *testing.T, mr *miniredis.Miniredis) *Backoff {
	t.Helper()
	key := BackoffKey(RecordKey(DefaultKeyPrefix, testApp("", nil)))
	if !mr.Exists(key) {
		return nil
	}
	raw, err := mr.Get(key)
	if err != nil {
		t.Fatal(err)
	}
	var b Backoff
	if err := json.Unmarshal([]byte(raw), &b); err != nil {
		t.Fatal(err)
	}
	return &b
}

// TestPermanentBackoffBindsOnlyTheSameCredential: a permanent failure
// (a wrong or expired secret) shared through Redis pauses replicas with
// the same CredentialID only (both empty counts as the same); during a
// rolling secret rotation the replicas with the new secret fetch, and the
// old ones then take the record they wrote.
func TestPermanentBackoffBindsOnlyTheSameCredential(t *testing.T) {
	for _, tc := range []struct {
		writer, reader string
		shared         bool
	}{
		{"cred-old", "cred-old", true},
		{"", "", true},
		{"cred-old", "cred-new", false},
		{"cred-old", "", false},
		{"", "cred-new", false},
	} {
		t.Run(fmt.Sprintf("%q_then_%q", tc.writer, tc.reader), func(t *testing.T) {
			mr := miniredis.RunT(t)
			clock := newFakeClock()
			fa := &scriptedFetcher{clock: clock, script: []fetchStep{{err: &httpError{status: 401, permanent: true}}}}
			fb := &scriptedFetcher{clock: clock, script: []fetchStep{{}}}
			a, _, _ := newClockCache(t, newMiniredisStore(t, mr), clock, Options{}, credApp("graph-api", tc.writer, fa.Fetch))
			b, _, _ := newClockCache(t, newMiniredisStore(t, mr), clock, Options{}, credApp("graph-api", tc.reader, fb.Fetch))

			var coded *Error
			if _, err := a.Token(t.Context(), "graph-api"); !errors.As(err, &coded) || status(coded) != http.StatusBadGateway {
				t.Fatalf("failing replica: %v, want 502", err)
			}
			stored := storedBackoff(t, mr)
			if stored == nil || !stored.Permanent || stored.CredentialID != tc.writer {
				t.Fatalf("stored backoff %+v, want permanent with credentialId %q", stored, tc.writer)
			}

			rec, err := b.Token(t.Context(), "graph-api")
			if tc.shared {
				if !errors.As(err, &coded) || status(coded) != http.StatusBadGateway || fb.calls.Load() != 0 {
					t.Fatalf("same credential: %v after %d fetches, want 502 without a fetch", err, fb.calls.Load())
				}
				return
			}
			if err != nil || fb.calls.Load() != 1 {
				t.Fatalf("other credential: %v after %d fetches, want a token from its own fetch", err, fb.calls.Load())
			}
			// The replica with the failing credential takes that record
			// from the store, without asking the endpoint again.
			got, err := a.Token(t.Context(), "graph-api")
			if err != nil || got.AccessToken != rec.AccessToken || fa.calls.Load() != 1 {
				t.Errorf("failing replica afterwards: %q, %v after %d fetches; want %q from the store",
					got.AccessToken, err, fa.calls.Load(), rec.AccessToken)
			}
		})
	}
}

// TestTransientBackoffBindsEveryCredential: throttling (Retry-After) and
// an unavailable endpoint (5xx) describe the endpoint, not a credential:
// every replica obeys them.
func TestTransientBackoffBindsEveryCredential(t *testing.T) {
	for name, fetchErr := range map[string]error{
		"retry-after":         &httpError{status: 429, retryAfter: 30 * time.Second},
		"503":                 &httpError{status: 503},
		"no status interface": &classifiedError{retryAfter: 30 * time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			mr := miniredis.RunT(t)
			clock := newFakeClock()
			fa := &scriptedFetcher{clock: clock, script: []fetchStep{{err: fetchErr}}}
			fb := &scriptedFetcher{clock: clock, script: []fetchStep{{}}}
			a, _, _ := newClockCache(t, newMiniredisStore(t, mr), clock, Options{}, credApp("graph-api", "cred-old", fa.Fetch))
			b, _, _ := newClockCache(t, newMiniredisStore(t, mr), clock, Options{}, credApp("graph-api", "cred-new", fb.Fetch))
			if _, err := a.Token(t.Context(), "graph-api"); err == nil {
				t.Fatal("failing replica: nil error")
			}
			if stored := storedBackoff(t, mr); stored == nil || stored.Permanent {
				t.Fatalf("stored backoff %+v, want a transient one", stored)
			}
			_, err := b.Token(t.Context(), "graph-api")
			var coded *Error
			if !errors.As(err, &coded) || status(coded) != http.StatusServiceUnavailable || coded.RetryAfter <= 0 || fb.calls.Load() != 0 {
				t.Errorf("other credential: %v after %d fetches, want 503 with RetryAfter and no fetch", err, fb.calls.Load())
			}
		})
	}
}

// TestLocalFailuresAreNotShared: failures of one replica alone (no answer
// from the endpoint, a token this cache rejects) back off that replica
// only: nothing is written to the store, and the other replicas fetch.
func TestLocalFailuresAreNotShared(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fetch func(clock *fakeClock) (Fetched, error)
	}{
		{"no response", func(*fakeClock) (Fetched, error) { return Fetched{}, &httpError{status: 0} }},
		{"timeout, wrapped", func(*fakeClock) (Fetched, error) {
			return Fetched{}, fmt.Errorf("fetching: %w", &httpError{status: 0})
		}},
		{"empty token", func(c *fakeClock) (Fetched, error) { return Fetched{ExpiresAt: c.Now().Add(time.Hour)}, nil }},
		{"token too short", func(c *fakeClock) (Fetched, error) {
			return Fetched{AccessToken: "short", ExpiresAt: c.Now().Add(30 * time.Second)}, nil
		}},
		{"fetch panics", func(*fakeClock) (Fetched, error) { panic("boom") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mr := miniredis.RunT(t)
			clock := newFakeClock()
			var aCalls atomic.Int64
			fetchA := func(context.Context) (Fetched, error) { aCalls.Add(1); return tc.fetch(clock) }
			fb := &scriptedFetcher{clock: clock, script: []fetchStep{{}}}
			a, _, logs := newClockCache(t, newMiniredisStore(t, mr), clock, Options{}, credApp("graph-api", "cred", fetchA))
			b, _, _ := newClockCache(t, newMiniredisStore(t, mr), clock, Options{}, credApp("graph-api", "cred", fb.Fetch))

			if _, err := a.Token(t.Context(), "graph-api"); err == nil {
				t.Fatal("failing replica: nil error")
			}
			if stored := storedBackoff(t, mr); stored != nil {
				t.Errorf("local failure written to the store: %+v", stored)
			}
			if l := logs.FilterMessage("token request failed; backing off").All(); len(l) != 1 || l[0].ContextMap()["shared"] != false {
				t.Errorf("backoff logs %v, want one with shared=false", l)
			}
			// This replica still backs off, in process.
			if _, err := a.Token(t.Context(), "graph-api"); err == nil || aCalls.Load() != 1 {
				t.Errorf("failing replica again: %v after %d fetches, want its in-process backoff", err, aCalls.Load())
			}
			if _, err := b.Token(t.Context(), "graph-api"); err != nil || fb.calls.Load() != 1 {
				t.Errorf("other replica: %v after %d fetches, want a token", err, fb.calls.Load())
			}
		})
	}
}

// TestPermanentBackoffInProcessBindsOnlyTheSameCredential: a reload
// rotates a wrong secret. The old config's handle backed off after its
// permanent failure; the new config's handle, registered on the same key,
// is not paused by it, fetches with its own credential, and its token then
// serves the old handle too.
func TestPermanentBackoffInProcessBindsOnlyTheSameCredential(t *testing.T) {
	clock := newFakeClock()
	old := &scriptedFetcher{clock: clock, script: []fetchStep{{err: &httpError{status: 401, permanent: true}}}}
	rotated := &scriptedFetcher{clock: clock, script: []fetchStep{{}}}
	c, _, _ := newClockCache(t, nil, clock, Options{})
	oldHandle := c.register(t, credApp("graph-api", "cred-old", old.Fetch))

	var coded *Error
	if _, err := oldHandle.Token(t.Context()); !errors.As(err, &coded) || status(coded) != http.StatusBadGateway {
		t.Fatalf("old config: %v, want 502", err)
	}
	if _, err := oldHandle.Token(t.Context()); err == nil || old.calls.Load() != 1 {
		t.Fatalf("old config again: %v after %d fetches, want its backoff", err, old.calls.Load())
	}
	newHandle := c.register(t, credApp("graph-api", "cred-new", rotated.Fetch))
	rec, err := newHandle.Token(t.Context())
	if err != nil || rotated.calls.Load() != 1 {
		t.Fatalf("new config: %v after %d fetches, want its own fetch", err, rotated.calls.Load())
	}
	if got, err := oldHandle.Token(t.Context()); err != nil || got.AccessToken != rec.AccessToken {
		t.Errorf("old config afterwards: %q, %v; want the new token from L1", got.AccessToken, err)
	}
}

// TestCredentialIDFuncFollowsRotation: with CredentialIDFunc the fingerprint
// is read when a failure is recorded and when a backoff is checked, so a
// credential rotated while registered (a certificate renewed on disk) is no
// longer bound by the permanent failure of the old one.
func TestCredentialIDFuncFollowsRotation(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	var current atomic.Value
	current.Store("cert-old")
	f := &scriptedFetcher{clock: clock, script: []fetchStep{{err: &httpError{status: 401, permanent: true}}, {}}}
	app := credApp("graph-api", "", f.Fetch)
	app.CredentialIDFunc = func() string { return current.Load().(string) }
	c, _, _ := newClockCache(t, newMiniredisStore(t, mr), clock, Options{}, app)

	if _, err := c.Token(t.Context(), "graph-api"); err == nil {
		t.Fatal("first fetch should fail")
	}
	if stored := storedBackoff(t, mr); stored == nil || stored.CredentialID != "cert-old" {
		t.Fatalf("stored backoff %+v, want credentialId cert-old", stored)
	}
	if _, err := c.Token(t.Context(), "graph-api"); err == nil || f.calls.Load() != 1 {
		t.Fatalf("same credential: %v after %d fetches, want the negative-cached 502", err, f.calls.Load())
	}
	current.Store("cert-new") // renewed on disk
	if _, err := c.Token(t.Context(), "graph-api"); err != nil || f.calls.Load() != 2 {
		t.Fatalf("rotated credential: %v after %d fetches, want a token from a new fetch", err, f.calls.Load())
	}
}
