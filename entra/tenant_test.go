package entra_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/entra"
)

// A token endpoint's own identity: the tenant its path names as Entra's do
// is expected as a configured tenant would be; another server's endpoint
// expects no tenant, so its tokens (RFC 9068: client_id, no tid) are
// checked by client and expiry from the start, with no token of this
// replica's own first.
func TestTokenIdentityOfATokenEndpoint(t *testing.T) {
	expires := time.Now().Add(time.Hour)
	identity := func(endpoint string) *entra.TokenIdentity {
		t.Helper()
		c, err := entra.NewClient(entra.Config{TokenEndpoint: endpoint, ClientID: claimsClient, ClientSecret: "s"})
		if err != nil {
			t.Fatal(err)
		}
		return entra.NewTokenIdentity(c)
	}
	ours := jwtWith(t, map[string]any{"tid": claimsTenant, "appid": claimsClient})
	theirs := jwtWith(t, map[string]any{"tid": otherTenant, "appid": claimsClient})

	for _, endpoint := range []string{
		"https://login.microsoftonline.com/" + claimsTenant + "/oauth2/v2.0/token",
		"https://login.microsoftonline.com/" + claimsTenant + "/oauth2/token",
		"http://127.0.0.1:9400/prefix/" + claimsTenant + "/oauth2/v2.0/token",
	} {
		v := identity(endpoint)
		assertCheck(t, v.Check(ours, expires), "")
		assertCheck(t, v.Check(theirs, expires), "tid")
		v.Learn(theirs) // a configured tenant is never learned over
		assertCheck(t, v.Check(theirs, expires), "tid")
	}

	// A domain name in an Entra-shaped endpoint: learned, as tenant_id's.
	domain := identity("https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token")
	assertCheck(t, domain.Check(ours, expires), "unverifiable")
	domain.Learn(ours)
	assertCheck(t, domain.Check(theirs, expires), "tid")

	// Another server's endpoint: the client at once, no tid needed; a tid
	// in the own first token is held to afterwards.
	for _, endpoint := range []string{"http://127.0.0.1:9000/token", "https://idp.example/oauth2/default/v1/token",
		"https://idp.example/realms/r/protocol/openid-connect/token", "https://idp.example/oauth2/token"} {
		v := identity(endpoint)
		rfc9068 := jwtWith(t, map[string]any{"client_id": claimsClient, "exp": expires.Unix()})
		assertCheck(t, v.Check(rfc9068, expires), "")
		assertCheck(t, v.Check(jwtWith(t, map[string]any{"client_id": otherClient}), expires), "client_id")
		assertCheck(t, v.Check(rfc9068, expires.Add(time.Hour)), "exp")
		assertCheck(t, v.Check("opaque", expires), "unverifiable")
		v.Learn(ours)
		assertCheck(t, v.Check(ours, expires), "")
		assertCheck(t, v.Check(theirs, expires), "tid")
	}
}

// Client credentials need one tenant: common, organizations and consumers
// span many (MSAL .NET refuses them for a confidential client; Entra
// answers AADSTS90010 or picks a tenant, and tenant discovery never
// resolves their "{tenantid}" issuer). Every credential is refused them
// at load, naming tenant_id, or token_endpoint when that names them; a
// managed identity, which takes no tenant, is not.
func TestMultiTenantAuthoritiesAreRefusedForEveryCredential(t *testing.T) {
	dir := t.TempDir()
	key := rsaKey(t, 0)
	credentials := map[string]func(*entra.Config){
		"client_secret": func(c *entra.Config) { c.ClientSecret = testSecret },
		"client_certificate": func(c *entra.Config) {
			c.ClientCertificate = &entra.CertificateCredential{
				CertFile: writeFile(t, dir, "c.pem", append(certPEM(newCert(t, key, "app", false, nil, nil)), pkcs1PEM(key)...))}
		},
		"federated_token_file": func(c *entra.Config) { c.FederatedTokenFile = writeFile(t, dir, "token", []byte("eyJ.e30.sig")) },
	}
	for credential, set := range credentials {
		for _, tt := range []struct {
			cfg   entra.Config
			field string
		}{
			{entra.Config{TenantID: "common"}, "tenant_id"},
			{entra.Config{TenantID: "organizations"}, "tenant_id"},
			{entra.Config{TenantID: "consumers"}, "tenant_id"},
			{entra.Config{TenantID: "Common"}, "tenant_id"},
			{entra.Config{TenantID: "ORGANIZATIONS."}, "tenant_id"},
			{entra.Config{TenantID: "common", TokenEndpoint: "https://idp.example/token"}, "tenant_id"},
			{entra.Config{TokenEndpoint: "https://login.microsoftonline.com/organizations/oauth2/v2.0/token"}, "token_endpoint"},
			{entra.Config{TokenEndpoint: "https://login.microsoftonline.com/Consumers/oauth2/token"}, "token_endpoint"},
		} {
			cfg := tt.cfg
			cfg.ClientID = testClientID
			set(&cfg)
			_, err := entra.NewClient(cfg)
			var cfgErr *entra.ConfigError
			if !errors.As(err, &cfgErr) || cfgErr.Field != tt.field || !strings.Contains(cfgErr.Reason, "request a token in one tenant") {
				t.Errorf("%s, tenant_id %q, token_endpoint %q: NewClient() error = %v, want %s refused as spanning many tenants",
					credential, tt.cfg.TenantID, tt.cfg.TokenEndpoint, err, tt.field)
			}
		}
		// One tenant, by ID or domain, and another server's endpoint whose
		// path merely ends in a similar word, are taken as before.
		for _, cfg := range []entra.Config{
			{TenantID: claimsTenant},
			{TenantID: "commonwealth.example"},
			{TokenEndpoint: "https://idp.example/common/token"},
		} {
			cfg.ClientID = testClientID
			set(&cfg)
			if _, err := entra.NewClient(cfg); err != nil {
				t.Errorf("%s, tenant_id %q, token_endpoint %q: %v", credential, cfg.TenantID, cfg.TokenEndpoint, err)
			}
		}
	}
	// A managed identity takes no tenant: tenant_id is ignored, as before.
	if _, err := entra.NewClient(entra.Config{TenantID: "common",
		ManagedIdentity: &entra.ManagedIdentityCredential{IMDSEndpoint: "http://127.0.0.1:1/token"}}); err != nil {
		t.Errorf("managed identity beside tenant_id common: %v", err)
	}
}
