package binding

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

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
	sealed := Application("sealed", domainClient(t, srv.URL, domain, clientA), scopes, []byte("a key that seals the records"), nil)
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
		Application("a", domainClient(t, srv.URL, domain, clientA), scopes, nil, nil).VerifyStored,
		Application("b", domainClient(t, srv.URL, domain, clientB), scopes, nil, nil).VerifyStored,
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
	app := Application("c", domainClient(t, srv.URL, domain, clientID), scopes, nil, nil)
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
