package entra_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/entra/entratest"
)

const (
	claimsTenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	claimsClient = "0e5e3f9c-1111-4a2b-9c3d-123456789abc"
	otherTenant  = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"
	otherClient  = "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"
)

// jwtWith returns an unsigned compact JWT with claims: TokenIdentity reads
// the payload and never the signature.
func jwtWith(t testing.TB, claims map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." + enc.EncodeToString(payload) + ".c2lnbmF0dXJl"
}

// secretClient returns a client-credentials client of tenant and client.
func secretClient(t *testing.T, tenant, client string) *entra.Client {
	t.Helper()
	c, err := entra.NewClient(entra.Config{TenantID: tenant, ClientID: client, ClientSecret: "s"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestTokenIdentityCheck(t *testing.T) {
	expires := time.Now().Add(time.Hour).Truncate(time.Second)
	exp := expires.Unix()
	tests := []struct {
		name      string
		claims    map[string]any // nil: the token is opaque
		expiresAt time.Time
		want      string // "": nil; "unverifiable"; else the mismatching claim
	}{
		{"v1 token", map[string]any{"tid": claimsTenant, "appid": claimsClient, "azp": claimsClient, "aud": "https://graph.microsoft.com", "exp": exp}, expires, ""},
		{"v2 token, azp only, aud a client ID", map[string]any{"tid": claimsTenant, "azp": claimsClient, "aud": otherClient, "ver": "2.0", "exp": exp}, expires, ""},
		{"RFC 9068 client_id", map[string]any{"tid": claimsTenant, "client_id": claimsClient, "exp": exp}, expires, ""},
		{"GUIDs in upper case", map[string]any{"tid": strings.ToUpper(claimsTenant), "appid": strings.ToUpper(claimsClient), "exp": exp}, expires, ""},
		{"no exp", map[string]any{"tid": claimsTenant, "appid": claimsClient}, expires, ""},
		{"record expiry within the skew", map[string]any{"tid": claimsTenant, "appid": claimsClient, "exp": exp}, expires.Add(entra.ExpirySkew), ""},
		{"another tenant", map[string]any{"tid": otherTenant, "appid": claimsClient, "exp": exp}, expires, "tid"},
		{"another client (appid)", map[string]any{"tid": claimsTenant, "appid": otherClient, "azp": claimsClient, "exp": exp}, expires, "appid"},
		{"another client (azp)", map[string]any{"tid": claimsTenant, "azp": otherClient, "exp": exp}, expires, "azp"},
		{"record outlives the token", map[string]any{"tid": claimsTenant, "appid": claimsClient, "exp": exp}, expires.Add(entra.ExpirySkew + time.Second), "exp"},
		{"opaque token", nil, expires, "unverifiable"},
		{"no tid", map[string]any{"appid": claimsClient, "exp": exp}, expires, "unverifiable"},
		{"no client claim", map[string]any{"tid": claimsTenant, "exp": exp}, expires, "unverifiable"},
		{"claims of the wrong type", map[string]any{"tid": 7, "appid": []string{claimsClient}}, expires, "unverifiable"},
	}
	identity := entra.NewTokenIdentity(secretClient(t, claimsTenant, claimsClient))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token := "opaque-token-value-Do-Not-Log"
			if tt.claims != nil {
				token = jwtWith(t, tt.claims)
			}
			err := identity.Check(token, tt.expiresAt)
			assertCheck(t, err, tt.want)
			if err != nil {
				assertNoLeak(t, err.Error(), token, token[strings.LastIndex(token, ".")+1:])
			}
		})
	}
	for _, malformed := range []string{"", "a.b", "a..c", "a.b.c.d", "a.!!!.c", "a." + base64.RawURLEncoding.EncodeToString([]byte("[1]")) + ".c"} {
		assertCheck(t, identity.Check(malformed, expires), "unverifiable")
	}
}

// assertCheck fails unless err is what want names: nil for "",
// ErrUnverifiableToken for "unverifiable", else a mismatch of that claim.
func assertCheck(t *testing.T, err error, want string) {
	t.Helper()
	var mismatch *entra.TokenMismatchError
	switch {
	case want == "" && err != nil:
		t.Errorf("Check = %v, want nil", err)
	case want == "unverifiable" && !errors.Is(err, entra.ErrUnverifiableToken):
		t.Errorf("Check = %v, want ErrUnverifiableToken", err)
	case want != "" && want != "unverifiable" && (!errors.As(err, &mismatch) || mismatch.Claim != want):
		t.Errorf("Check = %v, want a mismatch of %s", err, want)
	}
}

func TestTokenIdentityLearnsWhatIsNotConfigured(t *testing.T) {
	token := func(tenant, client string) string {
		return jwtWith(t, map[string]any{"tid": tenant, "appid": client})
	}
	expires := time.Now().Add(time.Hour)

	// A domain tenant: the tid comes from the client's own first token.
	identity := entra.NewTokenIdentity(secretClient(t, "contoso.onmicrosoft.com", claimsClient))
	assertCheck(t, identity.Check(token(claimsTenant, claimsClient), expires), "unverifiable")
	identity.Learn("opaque") // not a JWT: nothing learned
	assertCheck(t, identity.Check(token(claimsTenant, claimsClient), expires), "unverifiable")
	identity.Learn(token(claimsTenant, claimsClient))
	identity.Learn(token(otherTenant, claimsClient)) // only the first is learned
	assertCheck(t, identity.Check(token(claimsTenant, claimsClient), expires), "")
	assertCheck(t, identity.Check(token(otherTenant, claimsClient), expires), "tid")
	assertCheck(t, identity.Check(token(claimsTenant, otherClient), expires), "appid")

	// A configured GUID tenant is never learned over.
	configured := entra.NewTokenIdentity(secretClient(t, claimsTenant, claimsClient))
	configured.Learn(token(otherTenant, claimsClient))
	assertCheck(t, configured.Check(token(otherTenant, claimsClient), expires), "tid")

	// A token endpoint's own tokens without tid: only the client is checked.
	c, err := entra.NewClient(entra.Config{TokenEndpoint: "https://idp.example/oauth2/token", ClientID: "orders", ClientSecret: "s"})
	if err != nil {
		t.Fatal(err)
	}
	generic := entra.NewTokenIdentity(c)
	generic.Learn(jwtWith(t, map[string]any{"azp": "orders"}))
	assertCheck(t, generic.Check(jwtWith(t, map[string]any{"azp": "orders"}), expires), "")
	assertCheck(t, generic.Check(jwtWith(t, map[string]any{"azp": "billing"}), expires), "azp")
}

func TestTokenIdentityOfManagedIdentities(t *testing.T) {
	_, srv, user := miEmulator(t)
	other, otherSrv, err := entratest.NewServer(entratest.Options{TenantID: otherTenant})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(otherSrv.Close)
	other.AddManagedIdentity(systemMI, true)
	other.AddManagedIdentity(userMI, false)
	imds := func(srv *httptest.Server) string { return srv.URL + entratest.IMDSPath }
	tokenOf := func(t *testing.T, cred entra.ManagedIdentityCredential) (*entra.Client, *entra.Token) {
		t.Helper()
		client, err := entra.NewClient(entra.Config{ManagedIdentity: &cred})
		if err != nil {
			t.Fatal(err)
		}
		tok, err := client.Token(context.Background(), []string{vaultScope})
		if err != nil {
			t.Fatal(err)
		}
		return client, tok
	}
	tests := []struct {
		name string
		cred entra.ManagedIdentityCredential
	}{
		{"system-assigned", entra.ManagedIdentityCredential{}},
		{"user-assigned by client ID", entra.ManagedIdentityCredential{ClientID: userMI}},
		{"user-assigned by object ID", entra.ManagedIdentityCredential{ObjectID: user.ObjectID}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cred := tt.cred
			cred.IMDSEndpoint = imds(srv)
			client, own := tokenOf(t, cred)
			identity := entra.NewTokenIdentity(client)
			// A managed identity names no tenant: nothing is verifiable
			// before its own first token.
			assertCheck(t, identity.Check(own.AccessToken, own.ExpiresAt), "unverifiable")
			identity.Learn(own.AccessToken)
			assertCheck(t, identity.Check(own.AccessToken, own.ExpiresAt), "")
			_, again := tokenOf(t, cred)
			assertCheck(t, identity.Check(again.AccessToken, again.ExpiresAt), "")

			// The same identity's token from another tenant's host.
			_, foreign := tokenOf(t, entra.ManagedIdentityCredential{IMDSEndpoint: imds(otherSrv), ClientID: userMI})
			assertCheck(t, identity.Check(foreign.AccessToken, foreign.ExpiresAt), "tid")
		})
	}
	// Another identity of the same tenant: another appid.
	client, own := tokenOf(t, entra.ManagedIdentityCredential{IMDSEndpoint: imds(srv)})
	identity := entra.NewTokenIdentity(client)
	identity.Learn(own.AccessToken)
	_, user2 := tokenOf(t, entra.ManagedIdentityCredential{IMDSEndpoint: imds(srv), ClientID: userMI})
	assertCheck(t, identity.Check(user2.AccessToken, user2.ExpiresAt), "appid")
}

func TestTokenIdentityLearnsOnlyATokenThatNamesTenantAndClient(t *testing.T) {
	emu, srv, _ := miEmulator(t)
	client, err := entra.NewClient(entra.Config{ManagedIdentity: &entra.ManagedIdentityCredential{IMDSEndpoint: srv.URL + entratest.IMDSPath}})
	if err != nil {
		t.Fatal(err)
	}
	ownToken := func(t *testing.T) string {
		t.Helper()
		tok, err := client.Token(context.Background(), []string{vaultScope})
		if err != nil {
			t.Fatal(err)
		}
		return tok.AccessToken
	}
	identity := entra.NewTokenIdentity(client)
	for _, tc := range []struct {
		name, token string
	}{
		{"not a JWT", "opaque"},
		{"no client claim", jwtWith(t, map[string]any{"tid": claimsTenant})},
		{"no tid", jwtWith(t, map[string]any{"appid": systemMI})},
		{"empty claims", jwtWith(t, map[string]any{"tid": "", "appid": "", "azp": ""})},
	} {
		if err := identity.Learn(tc.token); !errors.Is(err, entra.ErrUnverifiableToken) {
			t.Errorf("%s: Learn = %v, want ErrUnverifiableToken", tc.name, err)
		}
		if tenant, client, ok := identity.Learned(); ok {
			t.Fatalf("%s: learned tenant %q client %q", tc.name, tenant, client)
		}
	}
	// The identity endpoint's own token without a client claim.
	emu.SetOmitClientClaims(true)
	if err := identity.Learn(ownToken(t)); !errors.Is(err, entra.ErrUnverifiableToken) || !strings.Contains(err.Error(), "client_id") {
		t.Fatalf("Learn of a token without a client claim = %v, want ErrUnverifiableToken naming the claims", err)
	}
	if _, _, ok := identity.Learned(); ok {
		t.Fatal("learned from a token without a client claim")
	}
	emu.SetOmitClientClaims(false)
	if err := identity.Learn(ownToken(t)); err != nil {
		t.Fatalf("Learn of a whole token = %v", err)
	}
	if tenant, client, ok := identity.Learned(); !ok || tenant == "" || client != systemMI {
		t.Fatalf("Learned = %q, %q, %v; want the tenant and %s", tenant, client, ok, systemMI)
	}
}

func TestTokenIdentityOfEmulatorFormats(t *testing.T) {
	emu, srv, err := entratest.NewServer(entratest.Options{TenantID: claimsTenant})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	emu.AddClient(claimsClient, "secret")
	client, err := entra.NewClient(entra.Config{AuthorityHost: srv.URL, TenantID: claimsTenant, ClientID: claimsClient, ClientSecret: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	identity := entra.NewTokenIdentity(client)
	for _, tt := range []struct {
		name   string
		format entratest.TokenFormat
		want   string
	}{{"v1.0", entratest.TokenV1, ""}, {"v2.0", entratest.TokenV2, ""}, {"opaque", entratest.TokenOpaque, "unverifiable"}} {
		t.Run(tt.name, func(t *testing.T) {
			emu.SetTokenFormat(tt.format)
			tok, err := client.Token(context.Background(), []string{"api://orders/.default"})
			if err != nil {
				t.Fatal(err)
			}
			assertCheck(t, identity.Check(tok.AccessToken, tok.ExpiresAt), tt.want)
		})
	}
}

func TestCheckAudience(t *testing.T) {
	graph := []string{"https://graph.microsoft.com/.default"}
	for _, tt := range []struct {
		name    string
		aud     any
		scopes  []string
		learned string
		ok      bool
	}{
		{"v1 resource URI", "https://graph.microsoft.com", graph, "", true},
		{"trailing slash", "https://graph.microsoft.com/", graph, "", true},
		{"other case", "HTTPS://Graph.Microsoft.com", graph, "", true},
		{"v2 client ID, nothing learned", otherClient, graph, "", true},
		{"v2 client ID, the learned one", otherClient, graph, strings.ToUpper(otherClient), true},
		{"v2 client ID, not the learned one", otherClient, graph, claimsClient, false},
		{"v2 client ID of a GUID resource", otherClient, []string{"api://" + otherClient + "/.default"}, "", true},
		{"another GUID for a GUID resource", claimsClient, []string{"api://" + otherClient + "/.default"}, "", false},
		{"another GUID for a bare GUID resource", claimsClient, []string{otherClient + "/.default"}, "", false},
		{"array with the resource", []any{"api://x", "https://graph.microsoft.com"}, graph, "", true},
		{"another resource", "api://orders", graph, "", false},
		{"another resource in an array", []any{"api://orders"}, graph, "", false},
		{"no aud", nil, graph, "", true},
		{"scope that names no resource", "anything", []string{"orders.read"}, "", true},
	} {
		claims := map[string]any{"tid": claimsTenant, "appid": claimsClient}
		if tt.aud != nil {
			claims["aud"] = tt.aud
		}
		err := entra.CheckAudience(jwtWith(t, claims), tt.scopes, tt.learned)
		var mismatch *entra.TokenMismatchError
		switch {
		case tt.ok && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case !tt.ok && (!errors.As(err, &mismatch) || mismatch.Claim != "aud"):
			t.Errorf("%s: %v, want an aud mismatch", tt.name, err)
		}
	}
	if err := entra.CheckAudience("opaque-token", graph, ""); err != nil {
		t.Errorf("an opaque token: %v", err)
	}
}
