package entra_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/entra/entratest"
)

// A tenant configured by domain name is resolved through its OpenID
// configuration under the client's authority; a tenant ID, a managed
// identity and another server's token endpoint have nothing to resolve.
func TestTenantDiscoveryURL(t *testing.T) {
	mi := &entra.ManagedIdentityCredential{}
	for _, tt := range []struct {
		name string
		cfg  entra.Config
		want string
	}{
		{"domain", entra.Config{TenantID: "contoso.onmicrosoft.com"},
			"https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0/.well-known/openid-configuration"},
		{"domain, sovereign cloud with a path", entra.Config{TenantID: "contoso.us", AuthorityHost: "https://login.microsoftonline.us/prefix/"},
			"https://login.microsoftonline.us/prefix/contoso.us/v2.0/.well-known/openid-configuration"},
		{"domain in an Entra-shaped token endpoint", entra.Config{TokenEndpoint: "https://login.microsoftonline.com/contoso.com/oauth2/v2.0/token"},
			"https://login.microsoftonline.com/contoso.com/v2.0/.well-known/openid-configuration"},
		{"tenant ID", entra.Config{TenantID: claimsTenant}, ""},
		{"another server", entra.Config{TokenEndpoint: "https://idp.example/token"}, ""},
		{"tenant_id beside another server's endpoint", entra.Config{TenantID: "contoso.com", TokenEndpoint: "https://idp.example/token"}, ""},
		{"managed identity", entra.Config{ManagedIdentity: mi}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.cfg.ManagedIdentity == nil {
				tt.cfg.ClientID, tt.cfg.ClientSecret = claimsClient, "s"
			}
			c, err := entra.NewClient(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.TenantDiscoveryURL(); got != tt.want {
				t.Errorf("TenantDiscoveryURL = %q, want %q", got, tt.want)
			}
			if tt.want == "" {
				if _, err := c.ResolveTenantID(context.Background()); !errors.Is(err, entra.ErrNoTenantToResolve) {
					t.Errorf("ResolveTenantID = %v, want ErrNoTenantToResolve", err)
				}
			}
		})
	}
}

// The emulator answers a domain name of its tenant as Entra does: the
// OpenID configuration's issuer names the tenant ID, which the client
// reads, and TokenIdentity takes it as a configured tenant.
func TestResolveTenantIDFromTheEmulator(t *testing.T) {
	emu, srv, err := entratest.NewServer(entratest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	if err := emu.AddDomain("Contoso.onmicrosoft.com", emu.TenantID()); err != nil {
		t.Fatal(err)
	}
	emu.AddClient(claimsClient, "s")
	client, err := entra.NewClient(entra.Config{TenantID: "contoso.onmicrosoft.com", ClientID: claimsClient, ClientSecret: "s", AuthorityHost: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	tenantID, err := client.ResolveTenantID(context.Background())
	if err != nil || tenantID != emu.TenantID() {
		t.Fatalf("ResolveTenantID = %q, %v; want %q", tenantID, err, emu.TenantID())
	}
	if n := emu.DiscoveryRequests(); n != 1 {
		t.Errorf("DiscoveryRequests = %d, want 1", n)
	}

	identity := entra.NewTokenIdentity(client)
	own, err := client.Token(context.Background(), []string{graphScope})
	if err != nil {
		t.Fatal(err)
	}
	expires := time.Now().Add(time.Hour)
	assertCheck(t, identity.Check(own.AccessToken, expires), "unverifiable")
	if err := identity.LearnTenant(strings.ToUpper(tenantID)); err != nil {
		t.Fatal(err)
	}
	assertCheck(t, identity.Check(own.AccessToken, expires), "")
	assertCheck(t, identity.Check(jwtWith(t, map[string]any{"tid": otherTenant, "appid": claimsClient}), expires), "tid")
	assertCheck(t, identity.Check(jwtWith(t, map[string]any{"tid": tenantID, "appid": otherClient}), expires), "appid")
	identity.Learn(jwtWith(t, map[string]any{"tid": otherTenant, "appid": claimsClient})) // resolved is learned: kept
	assertCheck(t, identity.Check(own.AccessToken, expires), "")

	// Nothing to resolve: a tenant ID, or a GUID that is not one.
	if err := entra.NewTokenIdentity(secretClient(t, claimsTenant, claimsClient)).LearnTenant(otherTenant); err == nil {
		t.Error("LearnTenant changed a configured tenant ID")
	}
	if err := entra.NewTokenIdentity(client).LearnTenant("contoso.onmicrosoft.com"); err == nil {
		t.Error("LearnTenant took a tenant that is not a GUID")
	}
}

// A document that cannot be had, or whose issuer names no tenant ID,
// resolves nothing and says why.
func TestResolveTenantIDFailures(t *testing.T) {
	for _, tt := range []struct {
		name, body string
		status     int
		want       string
	}{
		{"not found", `{"error":"invalid_tenant"}`, 400, "status 400"},
		{"not JSON", `<html>`, 200, "not a JSON object"},
		{"no tenant ID in the issuer", `{"issuer":"https://login.microsoftonline.com/{tenantid}/v2.0"}`, 200, "names no tenant ID"},
		{"too large", `{"issuer":"` + strings.Repeat("a", 70<<10) + `"}`, 200, "too large"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/contoso.com/v2.0/.well-known/openid-configuration" {
					http.NotFound(w, r)
					return
				}
				w.WriteHeader(tt.status)
				_, _ = w.Write([]byte(tt.body))
			}))
			t.Cleanup(srv.Close)
			client, err := entra.NewClient(entra.Config{TenantID: "contoso.com", ClientID: claimsClient, ClientSecret: "s", AuthorityHost: srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			if tenantID, err := client.ResolveTenantID(context.Background()); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ResolveTenantID = %q, %v; want an error with %q", tenantID, err, tt.want)
			}
		})
	}
}
