package binding

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/entra/entratest"
	"github.com/caddy-entra/caddy-entra/tokencache"
)

// domainClient returns a client of the emulator's tenant by domain name.
func domainClient(t *testing.T, authority, domain, clientID string) *entra.Client {
	t.Helper()
	c, err := entra.NewClient(entra.Config{TenantID: domain, ClientID: clientID, ClientSecret: "s", AuthorityHost: authority})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Records read from an unsealed store are checked against a domain-name
// tenant resolved once per process, shared by every identity of that
// tenant, before this replica has any token of its own; sealed records
// need no resolution.
func TestDomainTenantIsResolvedOncePerProcess(t *testing.T) {
	emu, srv, err := entratest.NewServer(entratest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	const domain = "contoso.onmicrosoft.com"
	if err := emu.AddDomain(domain, emu.TenantID()); err != nil {
		t.Fatal(err)
	}
	const clientA, clientB = "0e5e3f9c-1111-4a2b-9c3d-00000000000a", "0e5e3f9c-1111-4a2b-9c3d-00000000000b"
	emu.AddClient(clientA, "s")
	emu.AddClient(clientB, "s")
	scopes := []string{"api://orders/.default"}

	// Sealed: no round trip.
	sealed := Application("sealed", domainClient(t, srv.URL, domain, clientA), scopes, []byte("a key that seals the records"), nil, zap.NewNop())
	_ = sealed.VerifyStored(tokencache.Record{AccessToken: "x.y.z", AccessTokenExpiresAt: time.Now().Add(time.Hour)})
	if n := emu.DiscoveryRequests(); n != 0 {
		t.Fatalf("a sealed store's record made %d discovery requests, want 0", n)
	}

	// Each client's token of the tenant, as another replica stored it.
	var stored []tokencache.Record
	for _, clientID := range []string{clientA, clientB} {
		token, err := domainClient(t, srv.URL, domain, clientID).Token(context.Background(), scopes)
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, tokencache.Record{AccessToken: token.AccessToken, AccessTokenExpiresAt: token.ExpiresAt})
	}
	verifiers := []func(tokencache.Record) error{
		Application("a", domainClient(t, srv.URL, domain, clientA), scopes, nil, nil, zap.NewNop()).VerifyStored,
		Application("b", domainClient(t, srv.URL, domain, clientB), scopes, nil, nil, zap.NewNop()).VerifyStored,
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		wg.Go(func() { errs <- verifiers[i%2](stored[i%2]) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("a record of the resolved tenant: %v, want nil", err)
		}
	}
	if n := emu.DiscoveryRequests(); n != 1 {
		t.Errorf("discovery requests = %d, want 1 for the process", n)
	}
	if err := verifiers[1](stored[0]); err == nil || errors.Is(err, tokencache.ErrUnverifiable) {
		t.Errorf("another client's record: %v, want a mismatch", err)
	}
}

// When the tenant cannot be resolved, records stay unverifiable until
// this replica's own first token teaches the tenant, as before; the
// resolution is not retried for every record.
func TestUnresolvableDomainTenantFallsBackToLearning(t *testing.T) {
	emu, srv, err := entratest.NewServer(entratest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	const domain = "fabrikam.example" // not a name of the emulator's tenant
	const clientID = "0e5e3f9c-1111-4a2b-9c3d-00000000000c"
	emu.AddClient(clientID, "s")
	scopes := []string{"api://orders/.default"}
	token, err := entra.NewClient(entra.Config{TenantID: emu.TenantID(), ClientID: clientID, ClientSecret: "s", AuthorityHost: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	own, err := token.Token(context.Background(), scopes)
	if err != nil {
		t.Fatal(err)
	}
	app := Application("c", domainClient(t, srv.URL, domain, clientID), scopes, nil, nil, zap.NewNop())
	stored := tokencache.Record{AccessToken: own.AccessToken, AccessTokenExpiresAt: own.ExpiresAt}
	for range 3 {
		if err := app.VerifyStored(stored); !errors.Is(err, tokencache.ErrUnverifiable) {
			t.Fatalf("before the own first token: %v, want ErrUnverifiable", err)
		}
	}
	if n := emu.DiscoveryRequests(); n != 1 {
		t.Errorf("discovery requests = %d, want 1 (a failure is not retried)", n)
	}
	learningFetch(func(context.Context) (tokencache.Fetched, error) {
		return tokencache.Fetched{AccessToken: own.AccessToken, ExpiresAt: own.ExpiresAt}, nil
	}, tokenIdentityFor(domainClient(t, srv.URL, domain, clientID)), new(learnedAudience), nil)(t.Context())
	if err := app.VerifyStored(stored); err != nil {
		t.Errorf("after the own first token: %v, want nil", err)
	}
}

// A failed resolution is answered without a request until its backoff (1 s,
// doubling) has passed; then one caller asks again, and a success is kept
// for good. Many concurrent callers share one request.
func TestDomainTenantResolutionIsRetriedAfterItsBackoff(t *testing.T) {
	emu, srv, clock := emulatorAndClock(t)
	core, logs := observer.New(zap.InfoLevel)
	logger := zap.New(core)
	const domain = "retry.onmicrosoft.com" // not served yet: discovery fails
	client := domainClient(t, srv.URL, domain, "0e5e3f9c-1111-4a2b-9c3d-00000000000d")
	resolveAll := func() (ids []string, retryAfters []time.Duration, errs []error) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		for range 32 {
			wg.Go(func() {
				id, retryAfter, err := ResolveTenant(t.Context(), client, logger)
				mu.Lock()
				defer mu.Unlock()
				ids, retryAfters, errs = append(ids, id), append(retryAfters, retryAfter), append(errs, err)
			})
		}
		wg.Wait()
		return ids, retryAfters, errs
	}

	_, retryAfters, errs := resolveAll()
	for i, err := range errs {
		if err == nil || retryAfters[i] != time.Second {
			t.Fatalf("a failing discovery: %v, retry after %s; want an error, 1s", err, retryAfters[i])
		}
	}
	if n := emu.DiscoveryRequests(); n != 1 {
		t.Fatalf("discovery requests = %d, want 1 for 32 callers", n)
	}
	*clock = clock.Add(999 * time.Millisecond)
	if _, retryAfter, err := ResolveTenant(t.Context(), client, logger); err == nil || retryAfter != time.Millisecond {
		t.Fatalf("within the backoff: %v, retry after %s; want the failure, 1ms", err, retryAfter)
	}
	if n := emu.DiscoveryRequests(); n != 1 {
		t.Fatalf("discovery requests within the backoff = %d, want 1", n)
	}
	*clock = clock.Add(time.Millisecond)
	if _, retryAfter, err := ResolveTenant(t.Context(), client, logger); err == nil || retryAfter != 2*time.Second {
		t.Fatalf("after the backoff, still failing: %v, retry after %s; want an error, 2s (doubled)", err, retryAfter)
	}
	if n := emu.DiscoveryRequests(); n != 2 {
		t.Fatalf("discovery requests after the backoff = %d, want 2", n)
	}
	// One warning per attempt, not per caller: the operator sees why.
	warnings := logs.FilterMessageSnippet("resolving the tenant's ID").AllUntimed()
	if len(warnings) != 2 || warnings[1].Level != zap.WarnLevel || warnings[1].ContextMap()["attempts"] != int64(2) ||
		warnings[1].ContextMap()["retry_in"] != 2*time.Second || warnings[1].ContextMap()["discovery_url"] != client.TenantDiscoveryURL() {
		t.Fatalf("logged %+v; want two warnings, the second of attempt 2 retried in 2s naming the discovery URL", warnings)
	}

	if err := emu.AddDomain(domain, emu.TenantID()); err != nil {
		t.Fatal(err)
	}
	*clock = clock.Add(2 * time.Second)
	ids, _, errs := resolveAll()
	for i, err := range errs {
		if err != nil || ids[i] != emu.TenantID() {
			t.Fatalf("after the next backoff: %q, %v; want %s", ids[i], err, emu.TenantID())
		}
	}
	if recovered := logs.FilterMessage("resolved the tenant's ID from its OpenID configuration").AllUntimed(); len(recovered) != 1 ||
		recovered[0].ContextMap()["failed_attempts"] != int64(2) {
		t.Errorf("logged %+v on success; want one info after 2 failed attempts", recovered)
	}
	*clock = clock.Add(time.Hour)
	if id, _, err := ResolveTenant(t.Context(), client, logger); err != nil || id != emu.TenantID() {
		t.Fatalf("resolved: %q, %v; want it kept", id, err)
	}
	if n := emu.DiscoveryRequests(); n != 3 {
		t.Errorf("discovery requests = %d, want 3 (two failures, one success)", n)
	}
	if _, _, err := ResolveTenant(t.Context(), domainClient(t, srv.URL, emu.TenantID(), "0e5e3f9c-1111-4a2b-9c3d-00000000000d"), zap.NewNop()); !errors.Is(err, entra.ErrNoTenantToResolve) {
		t.Errorf("a GUID tenant: %v, want ErrNoTenantToResolve", err)
	}
}

// The backoff doubles up to a minute.
func TestDomainTenantBackoffIsBounded(t *testing.T) {
	_, srv, clock := emulatorAndClock(t)
	client := domainClient(t, srv.URL, "never.onmicrosoft.com", "0e5e3f9c-1111-4a2b-9c3d-00000000000e")
	var got []time.Duration
	for range 9 {
		_, retryAfter, err := ResolveTenant(t.Context(), client, zap.NewNop())
		if err == nil {
			t.Fatal("an unknown domain resolved")
		}
		got = append(got, retryAfter)
		*clock = clock.Add(retryAfter)
	}
	want := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60, 60}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("backoffs = %v, want %v seconds", got, want)
		}
	}
}

// emulatorAndClock serves an emulator and sets the resolutions' clock to
// the time returned, which the test moves.
func emulatorAndClock(t *testing.T) (*entratest.Emulator, *httptest.Server, *time.Time) {
	emu, srv, err := entratest.NewServer(entratest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	clock := time.Date(2026, 12, 7, 4, 0, 0, 0, time.UTC)
	now = func() time.Time { return clock }
	t.Cleanup(func() { now = time.Now })
	return emu, srv, &clock
}

// Before a record read from an unsealed store is checked, the first check
// waits for the tenant's resolution; while it keeps failing, later checks
// only start the next attempt after its backoff and never wait for a slow
// authority (a record read or an announcement is not held up again).
func TestRecordChecksWaitForTheResolutionOnlyOnce(t *testing.T) {
	_, _, clock := emulatorAndClock(t) // the clock only
	answer := make(chan struct{})      // each discovery request waits for one
	var mu sync.Mutex
	requests := 0
	authority := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests++
		mu.Unlock()
		select {
		case <-answer:
		case <-r.Context().Done():
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(authority.Close)
	requestsSoFar := func() int {
		mu.Lock()
		defer mu.Unlock()
		return requests
	}
	client := domainClient(t, authority.URL, "slow.onmicrosoft.com", "0e5e3f9c-1111-4a2b-9c3d-00000000000e")
	app := Application("a", client, []string{"api://orders/.default"}, nil, nil, zap.NewNop())
	rec := tokencache.Record{AccessToken: "x.y.z", AccessTokenExpiresAt: time.Now().Add(time.Hour)}
	check := func() <-chan struct{} {
		done := make(chan struct{})
		go func() {
			_ = app.VerifyStored(rec)
			close(done)
		}()
		return done
	}

	first := check()
	select {
	case <-first:
		t.Fatal("the first check did not wait for the resolution")
	case answer <- struct{}{}: // the first discovery request answered 404
	}
	<-first

	*clock = clock.Add(time.Second) // past the backoff
	select {
	case <-check():
	case <-time.After(5 * time.Second):
		t.Fatal("a later check waited for the slow authority")
	}
	for requestsSoFar() != 2 { // the next attempt, started and still unanswered
		runtime.Gosched()
	}
	answer <- struct{}{}
	_, _, _ = ResolveTenant(context.Background(), client, zap.NewNop()) // joins that attempt until it ends
}

// A discovery answered with a Retry-After is asked again after it (up to
// a minute), not after the first backoff's second.
func TestDomainTenantBackoffHonoursRetryAfter(t *testing.T) {
	_, _, clock := emulatorAndClock(t)
	var requests atomic.Int64
	throttled := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		requests.Add(1)
		w.Header().Set("Retry-After", "30")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	t.Cleanup(throttled.Close)
	client := domainClient(t, throttled.URL, "throttled.onmicrosoft.com", "0e5e3f9c-1111-4a2b-9c3d-00000000000f")
	_, retryAfter, err := ResolveTenant(t.Context(), client, zap.NewNop())
	var answered *entra.DiscoveryError
	if !errors.As(err, &answered) || answered.StatusCode != http.StatusTooManyRequests || retryAfter != 30*time.Second {
		t.Fatalf("a throttled discovery: %v, retry after %s; want a DiscoveryError of status 429, 30s", err, retryAfter)
	}
	*clock = clock.Add(29 * time.Second)
	if _, retryAfter, _ := ResolveTenant(t.Context(), client, zap.NewNop()); retryAfter != time.Second || requests.Load() != 1 {
		t.Fatalf("within the Retry-After: retry after %s, %d requests; want 1s, 1", retryAfter, requests.Load())
	}
	*clock = clock.Add(time.Second)
	if ResolveTenant(t.Context(), client, zap.NewNop()); requests.Load() != 2 {
		t.Fatalf("after the Retry-After: %d requests, want 2", requests.Load())
	}
}
