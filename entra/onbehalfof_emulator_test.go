package entra_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/entra/entratest"
)

var userScopes = []string{"https://graph.microsoft.com/User.Read", "https://graph.microsoft.com/Mail.Read"}

// oboEmulator starts an emulator serving a second tenant, with testClientID
// registered with a secret, a certificate and a federated credential, and
// returns a Client of each.
func oboEmulator(t *testing.T) (*entratest.Emulator, map[string]*entra.Client) {
	t.Helper()
	emu, srv, err := entratest.NewServer(entratest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	if err := emu.AddTenant(otherTenant); err != nil {
		t.Fatal(err)
	}
	emu.AddClient(testClientID, testSecret)
	key := rsaKey(t, 0)
	cert := newCert(t, key, "app", false, nil, nil)
	emu.AddCertificateClient(testClientID, cert)
	emu.AddFederatedClient(testClientID, federatedIssuer, federatedSubject)
	federated, err := emu.IssueFederatedToken(federatedIssuer, federatedSubject, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	clients := map[string]*entra.Client{}
	for kind, cfg := range map[string]entra.Config{
		"client_secret": {ClientSecret: testSecret},
		"client_certificate": {ClientCertificate: &entra.CertificateCredential{
			CertFile: writeFile(t, dir, "cert.pem", certPEM(cert)), KeyFile: writeFile(t, dir, "key.pem", pkcs8PEM(t, key))}},
		"federated_token": {FederatedTokenFile: writeFile(t, dir, "token", []byte(federated))},
	} {
		cfg.TenantID, cfg.ClientID, cfg.AuthorityHost = emu.TenantID(), testClientID, srv.URL
		client, err := entra.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		clients[kind] = client
	}
	return emu, clients
}

func issueUserToken(t *testing.T, emu *entratest.Emulator, u entratest.UserToken) string {
	t.Helper()
	if u.ObjectID == "" {
		u.ObjectID = userOID
	}
	if u.Audience == "" {
		u.Audience = "api://" + testClientID
	}
	token, err := emu.IssueUserToken(u)
	if err != nil {
		t.Fatal(err)
	}
	return token
}

func oboRules(emu *entratest.Emulator) entra.UserTokenRules {
	return entra.UserTokenRules{TenantID: emu.TenantID(), ClientID: testClientID, AllowedTenants: []string{otherTenant}}
}

// Every credential Entra accepts for OBO exchanges, in the application's
// tenant and in another allowed one, and the user reaches the downstream
// token.
func TestOnBehalfOfEachCredential(t *testing.T) {
	emu, clients := oboEmulator(t)
	for kind, client := range clients {
		for _, tenant := range []string{emu.TenantID(), otherTenant} {
			t.Run(kind+"/"+tenant, func(t *testing.T) {
				userToken := issueUserToken(t, emu, entratest.UserToken{TenantID: tenant})
				user, err := entra.ReadUserAssertion(userToken, time.Now(), oboRules(emu))
				if err != nil {
					t.Fatal(err)
				}
				token, err := client.OnBehalfOf(context.Background(), user, userScopes)
				if err != nil {
					t.Fatalf("OnBehalfOf: %v", err)
				}
				claims, err := emu.Verify(token.AccessToken)
				if err != nil {
					t.Fatal(err)
				}
				if claims.ObjectID != userOID || claims.ObjectID != user.ObjectID || claims.TenantID != tenant || claims.Scopes != "User.Read Mail.Read" ||
					claims.AppID != testClientID || claims.Audience != "https://graph.microsoft.com" || claims.IdentityType != "user" {
					t.Errorf("downstream claims = %+v", claims)
				}
			})
		}
	}
	if n := emu.OnBehalfOfRequests(); n != 6 {
		t.Errorf("OnBehalfOfRequests() = %d, want 6", n)
	}
}

// A user token that is expired, of a tenant not allowed, or for another
// audience is refused before any request.
func TestOnBehalfOfLocalChecksMakeNoRequest(t *testing.T) {
	emu, _ := oboEmulator(t)
	if err := emu.AddTenant("00000000-0000-4000-8000-00000000ffff"); err != nil {
		t.Fatal(err)
	}
	for claim, u := range map[string]entratest.UserToken{
		"exp": {Lifetime: -time.Second},
		"tid": {TenantID: "00000000-0000-4000-8000-00000000ffff"},
		"aud": {Audience: "api://another-app"},
	} {
		_, err := entra.ReadUserAssertion(issueUserToken(t, emu, u), time.Now(), oboRules(emu))
		var tokenErr *entra.UserTokenError
		if !errors.As(err, &tokenErr) || tokenErr.Claim != claim {
			t.Errorf("%s: error = %v", claim, err)
		}
	}
	if emu.TokenRequests() != 0 || emu.OnBehalfOfRequests() != 0 {
		t.Errorf("%d token requests, %d exchanges; want none", emu.TokenRequests(), emu.OnBehalfOfRequests())
	}
}

// Entra's refusals reach the caller classified, with the claims challenge,
// and a user's failure is told apart from the application's.
func TestOnBehalfOfErrorClasses(t *testing.T) {
	emu, clients := oboEmulator(t)
	client := clients["client_secret"]
	other, srv, err := entratest.NewServer(entratest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	const challenge = `{"access_token":{"capolids":{"essential":true,"values":["c1"]}}}`
	emu.ChallengeUser("mfa-user", challenge)
	emu.SetConsent(testClientID, "https://graph.microsoft.com/Mail.Read", false)
	wrongSecret, err := entra.NewClient(entra.Config{TenantID: emu.TenantID(), ClientID: testClientID, ClientSecret: "wrong", AuthorityHost: strings.TrimSuffix(client.TokenEndpoint(), emu.TokenPath())})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		client    *entra.Client
		token     string
		scopes    []string
		failure   entra.UserFailure
		permanent bool
		claims    string
	}{
		{"claims challenge", client, issueUserToken(t, emu, entratest.UserToken{ObjectID: "mfa-user"}), userScopes[:1], entra.InteractionRequired, true, challenge},
		{"consent", client, issueUserToken(t, emu, entratest.UserToken{}), userScopes, entra.ConsentRequired, true, ""},
		{"signed by another key", client, issueUserToken(t, other, entratest.UserToken{}), userScopes[:1], entra.UserTokenInvalid, true, ""},
		{"app-only token", client, issueUserToken(t, emu, entratest.UserToken{Scopes: []string{""}}), userScopes[:1], entra.UserTokenInvalid, true, ""},
		{"wrong client secret", wrongSecret, issueUserToken(t, emu, entratest.UserToken{}), userScopes[:1], entra.NotUserFailure, true, ""},
		{"invalid scope", client, issueUserToken(t, emu, entratest.UserToken{}), []string{"https://graph.microsoft.com/"}, entra.NotUserFailure, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			user, err := entra.ReadUserAssertion(tc.token, time.Now(), oboRules(emu))
			if err != nil {
				t.Fatal(err)
			}
			_, err = tc.client.OnBehalfOf(context.Background(), user, tc.scopes)
			reqErr := requestError(t, err)
			if reqErr.UserFailure() != tc.failure || reqErr.PermanentFailure() != tc.permanent || reqErr.Claims != tc.claims {
				t.Errorf("UserFailure, PermanentFailure, Claims = %q, %t, %s; want %q, %t, %s (%v)",
					reqErr.UserFailure(), reqErr.PermanentFailure(), reqErr.Claims, tc.failure, tc.permanent, tc.claims, err)
			}
			assertNoLeak(t, err.Error(), tc.token)
		})
	}

	emu.FailNext(1, entratest.Failure{Status: 503, RetryAfter: "7"})
	user, err := entra.ReadUserAssertion(issueUserToken(t, emu, entratest.UserToken{}), time.Now(), oboRules(emu))
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.OnBehalfOf(context.Background(), user, userScopes[:1])
	if reqErr := requestError(t, err); reqErr.UserTokenRejected() || reqErr.PermanentFailure() || reqErr.RetryAfter != 7*time.Second {
		t.Errorf("503: UserTokenRejected, PermanentFailure, RetryAfter = %t, %t, %s", reqErr.UserTokenRejected(), reqErr.PermanentFailure(), reqErr.RetryAfter)
	}
}

// The user's token, echoed by the endpoint whole, escaped or in part,
// appears in no field of the error.
func TestOnBehalfOfUserTokenRedacted(t *testing.T) {
	emu, clients := oboEmulator(t)
	userToken := issueUserToken(t, emu, entratest.UserToken{})
	parts := strings.Split(userToken, ".")
	user, err := entra.ReadUserAssertion(userToken, time.Now(), oboRules(emu))
	if err != nil {
		t.Fatal(err)
	}
	for name, echo := range map[string]string{
		"whole":          userToken,
		"query-escaped":  url.QueryEscape(userToken),
		"payload":        parts[1],
		"signature":      parts[2],
		"across the cut": strings.Repeat(".", 380) + userToken,
	} {
		t.Run(name, func(t *testing.T) {
			emu.FailNext(1, entratest.Failure{Error: "invalid_grant", ErrorCodes: []int{50013}, SubError: echo,
				Description: "Assertion " + echo + " is invalid.", Claims: `{"a":"` + echo + `"}`})
			_, err := clients["client_secret"].OnBehalfOf(context.Background(), user, userScopes[:1])
			reqErr := requestError(t, err)
			for what, text := range map[string]string{"Error()": err.Error(), "Description": reqErr.Description, "SubError": reqErr.SubError, "Claims": reqErr.Claims} {
				for _, part := range parts[1:] {
					assertNoPartOf(t, what, text, part[:min(len(part), 40)])
				}
			}
			if reqErr.UserFailure() != entra.UserTokenInvalid {
				t.Errorf("UserFailure() = %q", reqErr.UserFailure())
			}
		})
	}
}

// Client capabilities reach the emulator: its tokens carry xms_cc, for
// client credentials and on-behalf-of alike.
func TestClientCapabilitiesReachEntra(t *testing.T) {
	emu, clients := oboEmulator(t)
	client, err := entra.NewClient(entra.Config{TenantID: emu.TenantID(), ClientID: testClientID, ClientSecret: testSecret,
		AuthorityHost: strings.TrimSuffix(clients["client_secret"].TokenEndpoint(), emu.TokenPath()), ClientCapabilities: []string{"cp1"}})
	if err != nil {
		t.Fatal(err)
	}
	user, err := entra.ReadUserAssertion(issueUserToken(t, emu, entratest.UserToken{}), time.Now(), oboRules(emu))
	if err != nil {
		t.Fatal(err)
	}
	obo, err := client.OnBehalfOf(context.Background(), user, userScopes)
	if err != nil {
		t.Fatal(err)
	}
	app, err := client.Token(context.Background(), []string{graphScope})
	if err != nil {
		t.Fatal(err)
	}
	for _, token := range []*entra.Token{obo, app} {
		if claims, err := emu.Verify(token.AccessToken); err != nil || len(claims.Capabilities) != 1 || claims.Capabilities[0] != "cp1" {
			t.Errorf("xms_cc = %v (%v), want [cp1]", claims.Capabilities, err)
		}
	}
}

// A claims challenge carried by the context (continuous access evaluation)
// reaches the token endpoint merged with the client capabilities; a
// request without it sends the capabilities alone.
func TestClaimsChallengeReachesEntra(t *testing.T) {
	emu, clients := oboEmulator(t)
	var seen []string
	emu.OnIssue(func(issued entratest.Issued) { seen = append(seen, issued.Claims) })
	client, err := entra.NewClient(entra.Config{TenantID: emu.TenantID(), ClientID: testClientID, ClientSecret: testSecret,
		AuthorityHost: strings.TrimSuffix(clients["client_secret"].TokenEndpoint(), emu.TokenPath()), ClientCapabilities: []string{"cp1"}})
	if err != nil {
		t.Fatal(err)
	}
	challenge := `{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}`
	if _, err := client.Token(entra.WithClaimsChallenge(context.Background(), challenge), []string{graphScope}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Token(context.Background(), []string{graphScope}); err != nil {
		t.Fatal(err)
	}
	want := []string{`{"access_token":{"nbf":{"essential":true,"value":"1700000000"},"xms_cc":{"values":["cp1"]}}}`,
		`{"access_token":{"xms_cc":{"values":["cp1"]}}}`}
	if len(seen) != 2 || seen[0] != want[0] || seen[1] != want[1] {
		t.Errorf("claims sent = %q, want %q", seen, want)
	}
	if _, err := client.Token(entra.WithClaimsChallenge(context.Background(), "not json"), []string{graphScope}); err == nil {
		t.Error("a challenge that is not JSON was sent")
	}
}
