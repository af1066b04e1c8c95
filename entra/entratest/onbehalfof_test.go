package entratest

import (
	"net/http"
	"net/url"
	"testing"
	"time"
)

const (
	userOID      = "aaaaaaaa-0000-4000-8000-000000000001"
	secondTenant = "00000000-0000-4000-8000-0000000000b2"
	mailRead     = "https://graph.microsoft.com/Mail.Read"
)

// oboForm is an on-behalf-of exchange of assertion by the test client.
func oboForm(assertion string, scopes string) url.Values {
	return url.Values{
		"client_id":           {clientID},
		"client_secret":       {secret},
		"grant_type":          {JWTBearerGrantType},
		"requested_token_use": {"on_behalf_of"},
		"assertion":           {assertion},
		"scope":               {scopes},
	}
}

func userToken(t *testing.T, e *Emulator, u UserToken) string {
	t.Helper()
	if u.ObjectID == "" {
		u.ObjectID = userOID
	}
	if u.Audience == "" {
		u.Audience = "api://" + clientID
	}
	token, err := e.IssueUserToken(u)
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// The exchange issues a token for the requested resource carrying the
// user, the delegated scopes' names, the tenant of the request and the
// middle tier as its client; client capabilities become xms_cc.
func TestOnBehalfOfIssuesUserToken(t *testing.T) {
	e, srv := startEmulator(t, Options{})
	if err := e.AddTenant(secondTenant); err != nil {
		t.Fatal(err)
	}
	e.AddAppIDURI(clientID, "https://api.contoso.example")
	for _, tc := range []struct {
		name, tenant, audience, scope, wantResource, wantScopes string
	}{
		{"delegated scopes", "", "api://" + clientID, "https://graph.microsoft.com/User.Read " + mailRead + " offline_access", "https://graph.microsoft.com", "User.Read Mail.Read"},
		{"bare graph scope, client ID audience", "", clientID, "User.Read", "https://graph.microsoft.com", "User.Read"},
		{".default, App ID URI audience", "", "https://api.contoso.example", "api://downstream/.default", "api://downstream", "user_impersonation"},
		{"another tenant's user", secondTenant, "api://" + clientID, "api://downstream/Orders.Read", "api://downstream", "Orders.Read"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assertion := userToken(t, e, UserToken{TenantID: tc.tenant, Audience: tc.audience, Subject: "user-sub"})
			tenant := tc.tenant
			if tenant == "" {
				tenant = e.TenantID()
			}
			form := oboForm(assertion, tc.scope)
			form.Set("claims", `{"access_token":{"xms_cc":{"values":["cp1"]}}}`)
			r := post(t, srv.URL+"/"+tenant+"/oauth2/v2.0/token", form)
			if r.status != http.StatusOK {
				t.Fatalf("status %d: %v", r.status, r.body)
			}
			claims, err := e.Verify(r.body["access_token"].(string))
			if err != nil {
				t.Fatal(err)
			}
			if claims.ObjectID != userOID || claims.Subject != "user-sub" || claims.TenantID != tenant || claims.Audience != tc.wantResource ||
				claims.Scopes != tc.wantScopes || claims.AppID != clientID || claims.AuthorizedParty != clientID || claims.IdentityType != "user" ||
				len(claims.Capabilities) != 1 || claims.Capabilities[0] != "cp1" || claims.Issuer != e.issuerOf(tenant) {
				t.Errorf("claims = %+v", claims)
			}
		})
	}
	if n := e.OnBehalfOfRequests(); n != 4 {
		t.Errorf("OnBehalfOfRequests() = %d, want 4", n)
	}
	if n := e.TokenRequests(); n != 4 {
		t.Errorf("TokenRequests() = %d, want 4", n)
	}
	if r := post(t, srv.URL+e.TokenPath(), validForm()); r.status != http.StatusOK || e.OnBehalfOfRequests() != 4 {
		t.Errorf("client credentials: status %d, OnBehalfOfRequests() = %d", r.status, e.OnBehalfOfRequests())
	}
}

// Each refusal comes in Entra's body: error, the AADSTS code, suberror and
// the claims challenge where Entra sends them.
func TestOnBehalfOfErrors(t *testing.T) {
	e, srv := startEmulator(t, Options{})
	other, _ := startEmulator(t, Options{})
	if err := e.AddTenant(secondTenant); err != nil {
		t.Fatal(err)
	}
	const challenge = `{"access_token":{"capolids":{"essential":true,"values":["c1"]}}}`
	e.ChallengeUser("challenged-user", challenge)
	e.SetConsent(clientID, mailRead, false)
	valid := userToken(t, e, UserToken{})
	for _, tc := range []struct {
		name     string
		form     url.Values
		tenant   string
		code     string
		aadsts   int
		suberror string
		claims   string
	}{
		{"expired", oboForm(userToken(t, e, UserToken{Lifetime: -time.Minute}), "User.Read"), "", "invalid_grant", 500133, "", ""},
		{"another emulator's key", oboForm(userToken(t, other, UserToken{}), "User.Read"), "", "invalid_grant", 50013, "", ""},
		{"another tenant", oboForm(valid, "User.Read"), secondTenant, "invalid_grant", 50013, "", ""},
		{"another audience", oboForm(userToken(t, e, UserToken{Audience: "api://someone-else"}), "User.Read"), "", "invalid_grant", 500131, "", ""},
		{"claims challenge", oboForm(userToken(t, e, UserToken{ObjectID: "challenged-user"}), "User.Read"), "", "invalid_grant", 50076, "basic_action", challenge},
		{"consent", oboForm(valid, "User.Read "+mailRead), "", "invalid_grant", 65001, "consent_required", ""},
		{"two resources", oboForm(valid, "User.Read api://other/Read"), "", "invalid_scope", 28000, "", ""},
		{"no assertion", oboForm("", "User.Read"), "", "invalid_request", 900144, "", ""},
		{"claims not JSON", func() url.Values { f := oboForm(valid, "User.Read"); f.Set("claims", "{"); return f }(), "", "invalid_request", 90100, "", ""},
		{"not on_behalf_of", func() url.Values { f := oboForm(valid, "User.Read"); f.Del("requested_token_use"); return f }(), "", "invalid_request", 900144, "", ""},
		{"wrong secret", func() url.Values { f := oboForm(valid, "User.Read"); f.Set("client_secret", "wrong"); return f }(), "", "invalid_client", 7000215, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tenant := tc.tenant
			if tenant == "" {
				tenant = e.TenantID()
			}
			r := post(t, srv.URL+"/"+tenant+"/oauth2/v2.0/token", tc.form)
			if r.body["error"] != tc.code {
				t.Fatalf("status %d, body %v; want %s", r.status, r.body, tc.code)
			}
			checkEntraErrorBody(t, r, tc.aadsts)
			if got, _ := r.body["suberror"].(string); got != tc.suberror {
				t.Errorf("suberror = %q, want %q", got, tc.suberror)
			}
			if got, _ := r.body["claims"].(string); got != tc.claims {
				t.Errorf("claims = %q, want %q", got, tc.claims)
			}
		})
	}
	e.ChallengeUser("challenged-user", "")
	e.SetConsent(clientID, mailRead, true)
	for _, token := range []string{userToken(t, e, UserToken{ObjectID: "challenged-user"}), valid} {
		if r := post(t, srv.URL+e.TokenPath(), oboForm(token, mailRead)); r.status != http.StatusOK {
			t.Errorf("after the challenge and consent: status %d, %v", r.status, r.body)
		}
	}
}

func TestIssueUserTokenChecks(t *testing.T) {
	e, _ := startEmulator(t, Options{})
	for name, u := range map[string]UserToken{
		"no object ID":   {Audience: "api://x"},
		"no audience":    {ObjectID: userOID},
		"tenant unknown": {ObjectID: userOID, Audience: "api://x", TenantID: secondTenant},
	} {
		if _, err := e.IssueUserToken(u); err == nil {
			t.Errorf("%s: IssueUserToken succeeded", name)
		}
	}
	if err := e.AddTenant("bad/tenant"); err == nil {
		t.Error("AddTenant accepted a tenant ID that is not a path segment")
	}
}
