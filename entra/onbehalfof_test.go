package entra_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/entra"
)

const (
	userTenant = "00000000-0000-4000-8000-000000000001"
	userOID    = "aaaaaaaa-0000-4000-8000-000000000001"
)

func userClaims(now time.Time) map[string]any {
	return map[string]any{"aud": "api://" + testClientID, "tid": userTenant, "oid": userOID, "sub": "user-sub",
		"scp": "access_as_user", "exp": now.Add(time.Hour).Unix()}
}

func userRules() entra.UserTokenRules {
	return entra.UserTokenRules{TenantID: userTenant, ClientID: testClientID, AllowedTenants: []string{otherTenant}, Audiences: []string{"https://api.contoso.example/"}}
}

func TestReadUserAssertion(t *testing.T) {
	now := time.Now()
	with := func(name string, value any) string {
		claims := userClaims(now)
		if value == nil {
			delete(claims, name)
		} else {
			claims[name] = value
		}
		return jwtWith(t, claims)
	}
	for _, tc := range []struct {
		name, token, claim string // claim "-" for accepted
	}{
		{"api URI audience", with("aud", "api://"+testClientID), "-"},
		{"client ID audience", with("aud", testClientID), "-"},
		{"listed audience, slash ignored", with("aud", "https://api.contoso.example"), "-"},
		{"audience list", with("aud", []string{"https://other.example", testClientID}), "-"},
		{"allowed tenant, upper case", with("tid", strings.ToUpper(otherTenant)), "-"},
		{"not a JWT", "opaque-token-value", ""},
		{"two parts", "abc.def", ""},
		{"too long", with("name", strings.Repeat("x", 16<<10)), ""},
		{"payload not JSON", "e30." + base64.RawURLEncoding.EncodeToString([]byte("not json")) + ".sig", ""},
		{"expired", with("exp", now.Add(-time.Second).Unix()), "exp"},
		{"expiring now", with("exp", now.Unix()), "exp"},
		{"no exp", with("exp", nil), "exp"},
		{"exp not a number", with("exp", "tomorrow"), "exp"},
		{"foreign tenant", with("tid", "00000000-0000-4000-8000-00000000ffff"), "tid"},
		{"no tenant", with("tid", nil), "tid"},
		{"tenant not a GUID", with("tid", "common"), "tid"},
		{"wrong audience", with("aud", "https://graph.microsoft.com"), "aud"},
		{"audience prefix only", with("aud", "api://"), "aud"},
		{"no audience", with("aud", nil), "aud"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			user, err := entra.ReadUserAssertion(tc.token, now, userRules())
			if tc.claim == "-" {
				if err != nil {
					t.Fatalf("ReadUserAssertion: %v", err)
				}
				if user.TenantID != strings.ToLower(user.TenantID) || user.ObjectID != userOID || user.Subject != "user-sub" || user.ExpiresAt.IsZero() {
					t.Errorf("claims = %v", user)
				}
				return
			}
			var tokenErr *entra.UserTokenError
			if !errors.As(err, &tokenErr) || tokenErr.Claim != tc.claim {
				t.Fatalf("error = %v, want a *UserTokenError on %q", err, tc.claim)
			}
			assertNoLeak(t, err.Error(), tc.token, "00000000-0000-4000-8000-00000000ffff", "graph.microsoft.com", "tomorrow")
		})
	}
}

// A UserAssertion never shows its token, whatever prints it.
func TestUserAssertionFormatHidesToken(t *testing.T) {
	token := jwtWith(t, userClaims(time.Now()))
	user, err := entra.ReadUserAssertion(token, time.Now(), userRules())
	if err != nil {
		t.Fatal(err)
	}
	encoded, _ := json.Marshal(user)
	for _, out := range []string{fmt.Sprint(user), fmt.Sprintf("%+v %#v %s %q %x", user, *user, user, user, user), string(encoded)} {
		if strings.Contains(out, token) || strings.Contains(out, strings.Split(token, ".")[1]) {
			t.Errorf("output shows the token: %s", out)
		}
	}
	if !strings.Contains(fmt.Sprint(user), userOID) {
		t.Errorf("%v does not name the oid", user)
	}
}

// The exchange sends the jwt-bearer grant to the authority of the user's
// tenant, with the delegated scopes and the client's credential, and masks
// the user's token in the error of a refusal.
func TestOnBehalfOfRequestShape(t *testing.T) {
	type request struct {
		path string
		form map[string][]string
	}
	requests := make(chan request, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		requests <- request{r.URL.Path, r.PostForm}
		w.Header().Set("Content-Type", "application/json")
		if r.PostForm.Get("scope") == "fail" {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = fmt.Fprintf(w, `{"error":"invalid_grant","error_description":"AADSTS50013: Assertion %s is invalid.","error_codes":[50013]}`, r.PostForm.Get("assertion"))
			return
		}
		_, _ = w.Write([]byte(`{"access_token":"downstream","expires_in":3600,"token_type":"Bearer"}`))
	}))
	defer srv.Close()
	client, err := entra.NewClient(entra.Config{TenantID: userTenant, ClientID: testClientID, ClientSecret: testSecret, AuthorityHost: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.SupportsOnBehalfOf(); err != nil {
		t.Fatal(err)
	}
	claims := userClaims(time.Now())
	claims["tid"] = otherTenant
	userToken := jwtWith(t, claims)
	user, err := entra.ReadUserAssertion(userToken, time.Now(), userRules())
	if err != nil {
		t.Fatal(err)
	}
	scopes := []string{"https://graph.microsoft.com/User.Read", " https://graph.microsoft.com/Mail.Read"}
	token, err := client.OnBehalfOf(context.Background(), user, scopes)
	if err != nil {
		t.Fatal(err)
	}
	if token.AccessToken != "downstream" {
		t.Errorf("AccessToken = %q", token.AccessToken)
	}
	got := <-requests
	if want := "/" + otherTenant + "/oauth2/v2.0/token"; got.path != want {
		t.Errorf("path = %s, want %s (the user's tenant)", got.path, want)
	}
	for name, want := range map[string]string{
		"grant_type":          "urn:ietf:params:oauth:grant-type:jwt-bearer",
		"assertion":           userToken,
		"requested_token_use": "on_behalf_of",
		"scope":               "https://graph.microsoft.com/User.Read https://graph.microsoft.com/Mail.Read",
		"client_id":           testClientID,
		"client_secret":       testSecret,
	} {
		if v := got.form[name]; len(v) != 1 || v[0] != want {
			t.Errorf("%s = %v, want [%s]", name, v, want)
		}
	}

	_, err = client.OnBehalfOf(context.Background(), user, []string{"fail"})
	reqErr := requestError(t, err)
	<-requests
	if !reqErr.OnBehalfOf || !reqErr.PermanentFailure() {
		t.Errorf("OnBehalfOf, PermanentFailure = %t, %t; want true, true", reqErr.OnBehalfOf, reqErr.PermanentFailure())
	}
	assertNoLeak(t, err.Error(), userToken, strings.Split(userToken, ".")[1])
	if !strings.Contains(err.Error(), "[REDACTED]") {
		t.Errorf("error %q does not show the masked echo", err)
	}
}

// A managed identity, a tenant named by domain without an authority to
// resolve it (tenant_id beside a token endpoint elsewhere), or a missing
// assertion cannot exchange: refused without a request.
func TestOnBehalfOfRefusedLocally(t *testing.T) {
	mi, err := entra.NewClient(entra.Config{ManagedIdentity: &entra.ManagedIdentityCredential{IMDSEndpoint: "http://127.0.0.1:1/token"}})
	if err != nil {
		t.Fatal(err)
	}
	domain, err := entra.NewClient(entra.Config{TenantID: "contoso.onmicrosoft.com", ClientID: testClientID, ClientSecret: testSecret, TokenEndpoint: "http://127.0.0.1:1/token"})
	if err != nil {
		t.Fatal(err)
	}
	secret, err := entra.NewClient(entra.Config{TenantID: userTenant, ClientID: testClientID, ClientSecret: testSecret, AuthorityHost: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	user, err := entra.ReadUserAssertion(jwtWith(t, userClaims(time.Now())), time.Now(), userRules())
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		client *entra.Client
		user   *entra.UserAssertion
		reason string
	}{
		"managed identity": {mi, user, "managed identity"},
		"tenant domain":    {domain, user, "GUID"},
		"no assertion":     {secret, &entra.UserAssertion{TenantID: userTenant}, ""},
		"nil assertion":    {secret, nil, ""},
	} {
		t.Run(name, func(t *testing.T) {
			if tc.reason != "" {
				var cfgErr *entra.ConfigError
				if err := tc.client.SupportsOnBehalfOf(); !errors.As(err, &cfgErr) || cfgErr.Field != "on_behalf_of" || !strings.Contains(cfgErr.Reason, tc.reason) {
					t.Errorf("SupportsOnBehalfOf() = %v, want on_behalf_of naming %q", err, tc.reason)
				}
			}
			_, err := tc.client.OnBehalfOf(context.Background(), tc.user, []string{"https://graph.microsoft.com/User.Read"})
			reqErr := requestError(t, err)
			if !errors.Is(err, entra.ErrOnBehalfOf) || !reqErr.PermanentFailure() || reqErr.StatusCode != 0 {
				t.Errorf("error = %v, want a permanent ErrOnBehalfOf without a request", err)
			}
		})
	}
}

// A tenant given by domain name, in tenant_id or in a token endpoint shaped
// as Entra's, can exchange: its ID is resolved through the authority's
// OpenID configuration; TenantGUID names only a GUID tenant.
func TestOnBehalfOfDomainTenantIsSupported(t *testing.T) {
	for name, tc := range map[string]struct {
		cfg  entra.Config
		guid string
	}{
		"tenant_id domain":        {entra.Config{TenantID: "contoso.onmicrosoft.com", AuthorityHost: "http://127.0.0.1:1"}, ""},
		"token endpoint domain":   {entra.Config{TokenEndpoint: "http://127.0.0.1:1/contoso.onmicrosoft.com/oauth2/v2.0/token"}, ""},
		"tenant_id GUID":          {entra.Config{TenantID: strings.ToUpper(userTenant), AuthorityHost: "http://127.0.0.1:1"}, userTenant},
		"token endpoint GUID":     {entra.Config{TokenEndpoint: "http://127.0.0.1:1/" + userTenant + "/oauth2/v2.0/token"}, userTenant},
		"GUID beside an endpoint": {entra.Config{TenantID: userTenant, TokenEndpoint: "http://127.0.0.1:1/token"}, userTenant},
	} {
		t.Run(name, func(t *testing.T) {
			tc.cfg.ClientID, tc.cfg.ClientSecret = testClientID, testSecret
			client, err := entra.NewClient(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := client.SupportsOnBehalfOf(); err != nil {
				t.Errorf("SupportsOnBehalfOf() = %v, want nil", err)
			}
			if got := client.TenantGUID(); got != tc.guid {
				t.Errorf("TenantGUID() = %q, want %q", got, tc.guid)
			}
			if got := client.TenantDiscoveryURL() != ""; got != (tc.guid == "") {
				t.Errorf("TenantDiscoveryURL() set = %t, want %t", got, tc.guid == "")
			}
		})
	}
}

// Entra's answers to an exchange are told apart: the user's token, a claims
// challenge (kept, compact), consent, and the application's own failures.
func TestOnBehalfOfUserFailures(t *testing.T) {
	const claims = `{"access_token":{"capolids":{"essential":true,"values":["c1"]}}}`
	quoted, _ := json.Marshal(claims)
	for _, tc := range []struct {
		name, body string
		status     int
		want       entra.UserFailure
		claims     string
	}{
		{"expired", `{"error":"invalid_grant","error_codes":[500133]}`, 400, entra.UserTokenInvalid, ""},
		{"bad signature", `{"error":"invalid_grant","error_codes":[50013]}`, 400, entra.UserTokenInvalid, ""},
		{"invalid_grant, unknown code", `{"error":"invalid_grant","error_codes":[9999999]}`, 400, entra.UserTokenInvalid, ""},
		{"mfa with claims", `{"error":"invalid_grant","error_codes":[50076],"suberror":"basic_action","claims":` + string(quoted) + `}`, 400, entra.InteractionRequired, claims},
		{"claims, spaced", `{"error":"invalid_grant","claims":"{ \"access_token\" : {\"nbf\":{\"essential\":true, \"value\":\"1\"}} }"}`, 400, entra.InteractionRequired, `{"access_token":{"nbf":{"essential":true,"value":"1"}}}`},
		{"interaction_required", `{"error":"interaction_required","error_codes":[53003]}`, 400, entra.InteractionRequired, ""},
		{"claims not JSON", `{"error":"interaction_required","claims":"not json"}`, 400, entra.InteractionRequired, ""},
		{"claims an array", `{"error":"invalid_grant","claims":"[1]"}`, 400, entra.UserTokenInvalid, ""},
		{"consent", `{"error":"invalid_grant","error_codes":[65001],"suberror":"consent_required"}`, 400, entra.ConsentRequired, ""},
		{"consent suberror", `{"error":"invalid_grant","suberror":"consent_required"}`, 400, entra.ConsentRequired, ""},
		{"consent_required", `{"error":"consent_required"}`, 400, entra.ConsentRequired, ""},
		{"malformed user token", `{"error":"invalid_request","error_codes":[50027]}`, 400, entra.UserTokenInvalid, ""},
		{"invalid_request, unknown code", `{"error":"invalid_request","error_codes":[9999999]}`, 400, entra.UserTokenInvalid, ""},
		{"missing parameter", `{"error":"invalid_request","error_codes":[900144]}`, 400, entra.NotUserFailure, ""},
		{"application not in the user's tenant", `{"error":"invalid_grant","error_codes":[700016]}`, 400, entra.NotUserFailure, ""},
		{"no error code", `{}`, 400, entra.NotUserFailure, ""},
		{"client secret", `{"error":"invalid_client","error_codes":[7000215]}`, 401, entra.NotUserFailure, ""},
		{"client assertion malformed", `{"error":"invalid_client","error_codes":[50027]}`, 401, entra.NotUserFailure, ""},
		{"client assertion replayed", `{"error":"invalid_client","error_codes":[50013]}`, 401, entra.NotUserFailure, ""},
		{"scope", `{"error":"invalid_scope","error_codes":[70011]}`, 400, entra.NotUserFailure, ""},
		{"throttled", `{"error":"invalid_grant"}`, 429, entra.NotUserFailure, ""},
		{"unavailable", `{"error":"invalid_grant","error_codes":[50076]}`, 503, entra.NotUserFailure, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := entra.ParseTokenResponse(tc.status, nil, []byte(tc.body), time.Now())
			reqErr := requestError(t, err)
			if reqErr.UserFailure() != entra.NotUserFailure {
				t.Errorf("a client-credentials failure is %v", reqErr.UserFailure())
			}
			reqErr.OnBehalfOf = true
			if got := reqErr.UserFailure(); got != tc.want || reqErr.UserTokenRejected() != (tc.want != entra.NotUserFailure) {
				t.Errorf("UserFailure() = %q, UserTokenRejected() = %t; want %q", got, reqErr.UserTokenRejected(), tc.want)
			}
			if reqErr.Claims != tc.claims {
				t.Errorf("Claims = %s, want %s", reqErr.Claims, tc.claims)
			}
		})
	}
	long := `{"error":"interaction_required","claims":"{\"a\":\"` + strings.Repeat("x", 5000) + `\"}"}`
	if _, err := entra.ParseTokenResponse(400, nil, []byte(long), time.Now()); requestError(t, err).Claims != "" {
		t.Error("claims over 4 KiB are kept")
	}
}

func TestMergeClaims(t *testing.T) {
	for _, tc := range []struct {
		challenge    string
		capabilities []string
		want         string
	}{
		{"", nil, ""},
		{"", []string{"cp1"}, `{"access_token":{"xms_cc":{"values":["cp1"]}}}`},
		{`{"access_token":{"nbf":{"essential":true,"value":"1726000000"}}}`, nil, `{"access_token":{"nbf":{"essential":true,"value":"1726000000"}}}`},
		{`{"access_token":{"nbf":{"essential":true,"value":"1"}},"id_token":{"auth_time":{"essential":true}}}`, []string{"cp1", "cp2"},
			`{"access_token":{"nbf":{"essential":true,"value":"1"},"xms_cc":{"values":["cp1","cp2"]}},"id_token":{"auth_time":{"essential":true}}}`},
		{`{"access_token":{"xms_cc":{"values":["old"]},"acrs":{"essential":true,"value":12345678901234567890}}}`, []string{"cp1"},
			`{"access_token":{"acrs":{"essential":true,"value":12345678901234567890},"xms_cc":{"values":["cp1"]}}}`},
	} {
		got, err := entra.MergeClaims(tc.challenge, tc.capabilities)
		if err != nil || got != tc.want {
			t.Errorf("MergeClaims(%s, %v) = %s, %v; want %s", tc.challenge, tc.capabilities, got, err, tc.want)
		}
	}
	for _, bad := range []string{"not json", "[1]", "null", `{"a":1} {}`} {
		if _, err := entra.MergeClaims(bad, []string{"cp1"}); err == nil {
			t.Errorf("MergeClaims(%q) succeeded", bad)
		}
	}
}

// Client capabilities are checked when the client is made.
func TestClientCapabilitiesConfig(t *testing.T) {
	for name, cfg := range map[string]entra.Config{
		"blank":            {ClientCapabilities: []string{""}},
		"space":            {ClientCapabilities: []string{"cp 1"}},
		"quote":            {ClientCapabilities: []string{`cp"1`}},
		"claims param":     {ClientCapabilities: []string{"cp1"}, ExtraParams: map[string]string{"claims": "{}"}},
		"managed identity": {ClientCapabilities: []string{"cp1"}, ManagedIdentity: &entra.ManagedIdentityCredential{IMDSEndpoint: "http://127.0.0.1:1/token"}},
	} {
		if cfg.ManagedIdentity == nil {
			cfg.TenantID, cfg.ClientID, cfg.ClientSecret = userTenant, testClientID, testSecret
		}
		var cfgErr *entra.ConfigError
		if _, err := entra.NewClient(cfg); !errors.As(err, &cfgErr) || (cfgErr.Field != "client_capabilities" && cfgErr.Field != "token_request_param") {
			t.Errorf("%s: NewClient error = %v, want a client_capabilities ConfigError", name, err)
		}
	}
}

// The authorization endpoint of a challenge is the user's tenant's under
// the client's authority.
func TestAuthorizeEndpoint(t *testing.T) {
	authority, err := entra.NewClient(entra.Config{TenantID: userTenant, ClientID: testClientID, ClientSecret: testSecret, AuthorityHost: "https://login.microsoftonline.us/"})
	if err != nil {
		t.Fatal(err)
	}
	endpoint, err := entra.NewClient(entra.Config{ClientID: testClientID, ClientSecret: testSecret, TokenEndpoint: "https://idp.example/t1/oauth2/v2.0/token"})
	if err != nil {
		t.Fatal(err)
	}
	mi, err := entra.NewClient(entra.Config{ManagedIdentity: &entra.ManagedIdentityCredential{}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		client       *entra.Client
		tenant, want string
	}{
		{authority, otherTenant, "https://login.microsoftonline.us/" + otherTenant + "/oauth2/v2.0/authorize"},
		{authority, "../common", ""},
		{endpoint, otherTenant, "https://idp.example/t1/oauth2/v2.0/authorize"},
		{mi, otherTenant, ""},
	} {
		if got := tc.client.AuthorizeEndpoint(tc.tenant); got != tc.want {
			t.Errorf("AuthorizeEndpoint(%q) = %q, want %q", tc.tenant, got, tc.want)
		}
	}
}

// BenchmarkReadUserAssertion measures the local checks every request with a
// user's token pays.
func BenchmarkReadUserAssertion(b *testing.B) {
	claims := userClaims(time.Now())
	claims["name"], claims["upn"], claims["groups"] = "Some User", "user@contoso.example", []string{"a", "b", "c"}
	token := jwtWith(b, claims)
	rules, now := userRules(), time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := entra.ReadUserAssertion(token, now, rules); err != nil {
			b.Fatal(err)
		}
	}
}

// The multi-tenant authorities name no tenant to check users' tokens
// against (common and organizations have no tenant ID in their issuer;
// consumers is every personal account's): an on-behalf-of application is
// refused them at load, as every application is now (client credentials
// need one tenant too: TestMultiTenantAuthoritiesAreRefusedForEveryCredential).
func TestOnBehalfOfRefusesTheMultiTenantAuthorities(t *testing.T) {
	for _, cfg := range []entra.Config{
		{TenantID: "common", AuthorityHost: "http://127.0.0.1:1"},
		{TenantID: "Organizations", AuthorityHost: "http://127.0.0.1:1"},
		{TenantID: "consumers", AuthorityHost: "http://127.0.0.1:1"},
		{TokenEndpoint: "http://127.0.0.1:1/common/oauth2/v2.0/token"},
	} {
		cfg.ClientID, cfg.ClientSecret = testClientID, testSecret
		var cfgErr *entra.ConfigError
		if _, err := entra.NewClient(cfg); !errors.As(err, &cfgErr) || !strings.Contains(cfgErr.Reason, "common, organizations or consumers") {
			t.Errorf("tenant %q, endpoint %q: NewClient() error = %v, want the multi-tenant authority refused", cfg.TenantID, cfg.TokenEndpoint, err)
		}
	}
}
