package integration

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestOnBehalfOfDomainTenant runs the real Caddy with `tenant_id
// contoso.onmicrosoft.com` and an on_behalf_of route against the emulator:
// the config loads without asking anyone; the first requests resolve the
// tenant's ID once, through its OpenID configuration, and a home tenant's
// user token is exchanged, the upstream seeing the exchanged token; a
// foreign tenant's is refused without an exchange. A replica started while
// the domain cannot be resolved answers 503 with Retry-After, and serves
// once the name resolves, after its backoff.
func TestOnBehalfOfDomainTenant(t *testing.T) {
	f := newFleet(t)
	if err := f.emulator.AddTenant(oboForeignTenant); err != nil {
		t.Fatal(err)
	}
	const domain = "contoso.onmicrosoft.com"
	up := newOBOUpstream(t, f.emulator)
	config := sidecarConfig(testIdentity+`
		application graph-as-user {
			scope `+oboScope+`
			on_behalf_of
		}`,
		route{Path: "/graph", Application: "graph-as-user"})
	env := append(f.env(testClientSecret), "TEST_UPSTREAM="+up.server.URL, "TEST_TENANT_ID="+domain)

	// Not resolvable yet: a retryable answer, no exchange, no downstream call.
	replica := startSidecar(t, config, env...)
	if n := f.emulator.DiscoveryRequests(); n != 0 {
		t.Fatalf("%d OpenID configuration requests at load, want 0", n)
	}
	const oid = "0a0a0a0a-0000-4000-8000-00000000000a"
	home := oboUser(t, f.emulator, oid, "", 0)
	got := send(t, replica.URL+"/graph/v1.0/me", withUserToken(home))
	if got.Status != http.StatusServiceUnavailable || !strings.Contains(got.Body, "MICROSOFT_TOKEN_REQUEST_FAILED") ||
		got.Header.Get("Retry-After") != "1" {
		t.Fatalf("before the domain resolves: %d, Retry-After %q, %s; want 503 MICROSOFT_TOKEN_REQUEST_FAILED, 1",
			got.Status, got.Header.Get("Retry-After"), got.Body)
	}
	if n, c := f.emulator.OnBehalfOfRequests(), up.calls.Load(); n != 0 || c != 0 {
		t.Fatalf("an unresolved tenant made %d exchanges and %d downstream calls, want none", n, c)
	}

	// Resolvable: after the backoff (1 s), the next request resolves it.
	if err := f.emulator.AddDomain(domain, f.emulator.TenantID()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the tenant resolved after its backoff", 10*time.Second, func() error {
		if got := send(t, replica.URL+"/graph/v1.0/me", withUserToken(home)); got.Status != http.StatusOK || got.Body != oid {
			return fmt.Errorf("%d %s", got.Status, got.Body)
		}
		return nil
	})
	if n := f.emulator.DiscoveryRequests(); n != 2 {
		t.Errorf("%d OpenID configuration requests, want 2 (one failure, one success)", n)
	}

	// A replica started with the domain resolvable: 50 concurrent first
	// requests of two users resolve it once and exchange once per user.
	fresh := startSidecar(t, config, env...)
	discovered, exchanged := f.emulator.DiscoveryRequests(), f.emulator.OnBehalfOfRequests()
	const other = "0b0b0b0b-0000-4000-8000-00000000000b"
	users := map[string]string{oid: home, other: oboUser(t, f.emulator, other, "", 0)}
	var wg sync.WaitGroup
	var wrong atomic.Int64
	for user, token := range users {
		for range 25 {
			wg.Go(func() {
				if got := send(t, fresh.URL+"/graph/v1.0/me", withUserToken(token)); got.Status != http.StatusOK || got.Body != user {
					wrong.Add(1)
				}
			})
		}
	}
	wg.Wait()
	if n := wrong.Load(); n > 0 {
		t.Fatalf("%d of 50 requests did not reach downstream with their user's exchanged token\n%s", n, fresh.logs())
	}
	if n := f.emulator.DiscoveryRequests() - discovered; n != 1 {
		t.Errorf("%d OpenID configuration requests for 50 concurrent requests, want 1", n)
	}
	if n := f.emulator.OnBehalfOfRequests() - exchanged; n != 2 {
		t.Errorf("%d exchanges for 2 users, want 2", n)
	}
	for _, token := range up.downstreamTokens() {
		for _, user := range users {
			if token == user {
				t.Error("the upstream saw a user's token, not the exchanged one")
			}
		}
	}

	// A foreign tenant's user: refused locally, as with a GUID tenant_id.
	exchanged, calls := f.emulator.OnBehalfOfRequests(), up.calls.Load()
	foreign := oboUser(t, f.emulator, "0c0c0c0c-0000-4000-8000-00000000000c", oboForeignTenant, 0)
	for _, r := range []*sidecar{replica, fresh} {
		got := send(t, r.URL+"/graph/v1.0/me", withUserToken(foreign))
		if got.Status != http.StatusUnauthorized || !strings.Contains(got.Body, "MICROSOFT_USER_TOKEN_INVALID") ||
			!strings.Contains(got.Body, "tid: is not the application's tenant or an allowed tenant") ||
			got.Header.Get("WWW-Authenticate") != `Bearer error="invalid_token"` {
			t.Errorf("foreign tenant: %d %q %s, want 401 MICROSOFT_USER_TOKEN_INVALID naming tid", got.Status, got.Header.Get("WWW-Authenticate"), got.Body)
		}
	}
	if n, c := f.emulator.OnBehalfOfRequests()-exchanged, up.calls.Load()-calls; n != 0 || c != 0 {
		t.Errorf("a foreign tenant's token made %d exchanges and %d downstream calls, want none", n, c)
	}
	for _, r := range []*sidecar{replica, fresh} {
		assertNoSecrets(t, r.logs(), up.downstreamTokens()...)
		for _, user := range append([]string{foreign}, home, users[other]) {
			if strings.Contains(r.logs(), strings.Split(user, ".")[1]) {
				t.Error("a user's token is in the sidecar's logs")
			}
		}
	}
}
