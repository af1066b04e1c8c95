package entratest

import (
	"context"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	clientID   = "00000000-0000-4000-8000-0000000000c1"
	secret     = "emulator-test-secret"
	graphScope = "https://graph.microsoft.com/.default"
)

var uuidPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func startEmulator(t *testing.T, opts Options) (*Emulator, *httptest.Server) {
	t.Helper()
	e, srv, err := NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	e.AddClient(clientID, secret)
	return e, srv
}

func validForm() url.Values {
	return url.Values{
		"client_id":     {clientID},
		"client_secret": {secret},
		"scope":         {graphScope},
		"grant_type":    {"client_credentials"},
	}
}

type response struct {
	status int
	header http.Header
	body   map[string]any
}

func post(t *testing.T, target string, form url.Values) response {
	t.Helper()
	resp, err := http.PostForm(target, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("response body is not JSON: %v", err)
	}
	return response{resp.StatusCode, resp.Header, body}
}

func TestIssueToken(t *testing.T) {
	e, srv := startEmulator(t, Options{TokenLifetime: 90 * time.Minute})
	r := post(t, srv.URL+e.TokenPath(), validForm())
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %v", r.status, r.body)
	}
	if r.body["token_type"] != "Bearer" || r.body["expires_in"] != float64(5400) || r.body["ext_expires_in"] != float64(5400) {
		t.Errorf("body = %v", r.body)
	}
	if got := r.header.Get("Cache-Control"); !strings.Contains(got, "no-store") {
		t.Errorf("Cache-Control = %q, want no-store", got)
	}
	accessToken, _ := r.body["access_token"].(string)
	claims, err := e.Verify(accessToken)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	want := Claims{
		Audience:        "https://graph.microsoft.com",
		Issuer:          "https://sts.windows.net/" + DefaultTenantID + "/",
		TenantID:        DefaultTenantID,
		AppID:           clientID,
		AuthorizedParty: clientID,
		IdentityType:    "app",
		Version:         "1.0",
		KeyID:           e.KeyID(),
	}
	if claims.Audience != want.Audience || claims.Issuer != want.Issuer || claims.TenantID != want.TenantID ||
		claims.AppID != want.AppID || claims.AuthorizedParty != want.AuthorizedParty || claims.IdentityType != want.IdentityType ||
		claims.Version != want.Version || claims.KeyID != want.KeyID {
		t.Errorf("claims = %+v\nwant %+v", *claims, want)
	}
	if !uuidPattern.MatchString(claims.Subject) || claims.ObjectID != claims.Subject {
		t.Errorf("sub, oid = %q, %q; want one UUID", claims.Subject, claims.ObjectID)
	}
	if lifetime := claims.ExpiresAt.Sub(claims.IssuedAt); lifetime != 90*time.Minute {
		t.Errorf("exp - iat = %s, want 90m", lifetime)
	}
	if !claims.NotBefore.Equal(claims.IssuedAt) {
		t.Errorf("nbf %s != iat %s", claims.NotBefore, claims.IssuedAt)
	}

	// A second token differs (uti) but names the same stable subject.
	r2 := post(t, srv.URL+e.TokenPath(), validForm())
	claims2, err := e.Verify(r2.body["access_token"].(string))
	if err != nil {
		t.Fatal(err)
	}
	if claims2.UniqueTokenID == claims.UniqueTokenID || r2.body["access_token"] == accessToken {
		t.Error("two tokens share a uti")
	}
	if claims2.Subject != claims.Subject {
		t.Errorf("sub changed between tokens: %q, %q", claims.Subject, claims2.Subject)
	}
	if e.TokenRequests() != 2 || e.IssuedTokens() != 2 {
		t.Errorf("TokenRequests, IssuedTokens = %d, %d; want 2, 2", e.TokenRequests(), e.IssuedTokens())
	}
}

func TestTokenErrors(t *testing.T) {
	e, srv := startEmulator(t, Options{})
	endpoint := srv.URL + e.TokenPath()
	with := func(key, value string) url.Values {
		form := validForm()
		if value == "" {
			form.Del(key)
		} else {
			form.Set(key, value)
		}
		return form
	}
	tests := []struct {
		name   string
		target string
		form   url.Values
		status int
		code   string
		aadsts int
	}{
		{"unknown tenant", srv.URL + "/contoso.onmicrosoft.com/oauth2/v2.0/token", validForm(), 400, "invalid_request", 90002},
		{"missing grant_type", endpoint, with("grant_type", ""), 400, "invalid_request", 900144},
		{"password grant", endpoint, with("grant_type", "password"), 400, "unsupported_grant_type", 70003},
		{"missing client_id", endpoint, with("client_id", ""), 400, "invalid_request", 900144},
		{"unknown client", endpoint, with("client_id", "99999999-0000-4000-8000-000000000000"), 400, "unauthorized_client", 700016},
		{"missing secret", endpoint, with("client_secret", ""), 401, "invalid_client", 7000216},
		{"wrong secret", endpoint, with("client_secret", "not-it"), 401, "invalid_client", 7000215},
		{"missing scope", endpoint, with("scope", ""), 400, "invalid_request", 90014},
		{"delegated scope", endpoint, with("scope", "https://graph.microsoft.com/User.Read"), 400, "invalid_scope", 1002012},
		{"bare .default", endpoint, with("scope", "/.default"), 400, "invalid_scope", 1002012},
		{"two resources", endpoint, with("scope", graphScope+" api://other/.default"), 400, "invalid_scope", 28000},
	}
	seenTraceIDs := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := post(t, tt.target, tt.form)
			if r.status != tt.status || r.body["error"] != tt.code {
				t.Fatalf("status, error = %d, %v; want %d, %s (%v)", r.status, r.body["error"], tt.status, tt.code, r.body)
			}
			checkEntraErrorBody(t, r, tt.aadsts)
			traceID := r.body["trace_id"].(string)
			if seenTraceIDs[traceID] {
				t.Errorf("trace_id %s reused", traceID)
			}
			seenTraceIDs[traceID] = true
			if strings.Contains(r.body["error_description"].(string), secret) {
				t.Error("error_description contains the secret")
			}
		})
	}
	if e.IssuedTokens() != 0 || e.TokenRequests() != int64(len(tests)) {
		t.Errorf("IssuedTokens, TokenRequests = %d, %d; want 0, %d", e.IssuedTokens(), e.TokenRequests(), len(tests))
	}
}

// checkEntraErrorBody checks the shape of Entra's error answers.
func checkEntraErrorBody(t *testing.T, r response, aadsts int) {
	t.Helper()
	traceID, _ := r.body["trace_id"].(string)
	correlationID, _ := r.body["correlation_id"].(string)
	if !uuidPattern.MatchString(traceID) || !uuidPattern.MatchString(correlationID) {
		t.Errorf("trace_id, correlation_id = %q, %q; want UUIDs", traceID, correlationID)
	}
	if r.header.Get("X-Ms-Request-Id") != traceID {
		t.Errorf("x-ms-request-id = %q, want the trace ID", r.header.Get("X-Ms-Request-Id"))
	}
	codes, _ := r.body["error_codes"].([]any)
	if len(codes) != 1 || codes[0] != float64(aadsts) {
		t.Errorf("error_codes = %v, want [%d]", r.body["error_codes"], aadsts)
	}
	desc, _ := r.body["error_description"].(string)
	prefix := "AADSTS" + jsonNumber(aadsts) + ": "
	if !strings.HasPrefix(desc, prefix) {
		t.Errorf("error_description %q does not start with %q", desc, prefix)
	}
	for _, part := range []string{"\r\nTrace ID: " + traceID, "\r\nCorrelation ID: " + correlationID, "\r\nTimestamp: "} {
		if !strings.Contains(desc, part) {
			t.Errorf("error_description %q lacks %q", desc, part)
		}
	}
	if ts, _ := r.body["timestamp"].(string); !regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$`).MatchString(ts) {
		t.Errorf("timestamp = %q", ts)
	}
	if uri, _ := r.body["error_uri"].(string); !strings.HasSuffix(uri, "/error?code="+jsonNumber(aadsts)) {
		t.Errorf("error_uri = %q", uri)
	}
}

func jsonNumber(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func TestTokenRequiresForm(t *testing.T) {
	e, srv := startEmulator(t, Options{})
	body, _ := json.Marshal(map[string]string{"client_id": clientID, "client_secret": secret, "scope": graphScope, "grant_type": "client_credentials"})
	resp, err := http.Post(srv.URL+e.TokenPath(), "application/json", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("JSON body: status %d, want 400", resp.StatusCode)
	}

	// Parameters in the query string do not count either.
	resp, err = http.Post(srv.URL+e.TokenPath()+"?"+validForm().Encode(), "application/x-www-form-urlencoded", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("query parameters: status %d, want 400", resp.StatusCode)
	}

	resp, err = http.Get(srv.URL + e.TokenPath())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: status %d, want 405", resp.StatusCode)
	}
}

func TestClientSecretBasicAndSeveralClients(t *testing.T) {
	e, srv := startEmulator(t, Options{})
	e.AddClient("second-app", "second-secret")

	form := validForm()
	form.Del("client_id")
	form.Del("client_secret")
	req, _ := http.NewRequest(http.MethodPost, srv.URL+e.TokenPath(), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("second-app", "second-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %v", resp.StatusCode, body)
	}
	claims, err := e.Verify(body["access_token"].(string))
	if err != nil {
		t.Fatal(err)
	}
	if claims.AppID != "second-app" {
		t.Errorf("appid = %q, want second-app", claims.AppID)
	}

	// The first client still works, with its own subject.
	r := post(t, srv.URL+e.TokenPath(), validForm())
	first, err := e.Verify(r.body["access_token"].(string))
	if err != nil {
		t.Fatal(err)
	}
	if first.Subject == claims.Subject {
		t.Error("two clients share a subject")
	}
}

func TestFailNextQueue(t *testing.T) {
	e, srv := startEmulator(t, Options{})
	endpoint := srv.URL + e.TokenPath()
	e.FailNext(2, Failure{Status: 503, Error: "temporarily_unavailable", ErrorCodes: []int{50196}, RetryAfter: "7"})
	e.FailNext(1, Failure{Error: "invalid_client", Description: "Custom.", ErrorCodes: []int{7000222}})

	for i := range 2 {
		r := post(t, endpoint, validForm())
		if r.status != 503 || r.body["error"] != "temporarily_unavailable" || r.header.Get("Retry-After") != "7" {
			t.Fatalf("request %d: %d %v %q", i, r.status, r.body, r.header.Get("Retry-After"))
		}
		checkEntraErrorBody(t, r, 50196)
	}
	r := post(t, endpoint, validForm())
	if r.status != 400 || r.body["error"] != "invalid_client" || !strings.HasPrefix(r.body["error_description"].(string), "AADSTS7000222: Custom.") {
		t.Fatalf("third request: %d %v", r.status, r.body)
	}
	if r := post(t, endpoint, validForm()); r.status != 200 {
		t.Fatalf("fourth request: %d %v", r.status, r.body)
	}

	e.FailNext(-1, Failure{Status: 500})
	for range 3 {
		if r := post(t, endpoint, validForm()); r.status != 500 || r.body["error"] != "temporarily_unavailable" {
			t.Fatalf("FailNext(-1): %d %v", r.status, r.body)
		}
	}
	e.ClearFailures()
	if r := post(t, endpoint, validForm()); r.status != 200 {
		t.Fatalf("after ClearFailures: %d %v", r.status, r.body)
	}
	if e.TokenRequests() != 8 || e.IssuedTokens() != 2 {
		t.Errorf("TokenRequests, IssuedTokens = %d, %d; want 8, 2", e.TokenRequests(), e.IssuedTokens())
	}
}

func TestFailureRawBody(t *testing.T) {
	e, srv := startEmulator(t, Options{})
	e.FailNext(1, Failure{Status: 200, Body: "<html>maintenance</html>", ContentType: "text/html"})
	resp, err := http.PostForm(srv.URL+e.TokenPath(), validForm())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := new(strings.Builder)
	_, _ = io.Copy(buf, resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/html" || buf.String() != "<html>maintenance</html>" {
		t.Errorf("got %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), buf)
	}
}

// TestDelayHonoursCancellation: a client giving up frees the handler, so
// the server closes at once rather than after the delay.
func TestDelayHonoursCancellation(t *testing.T) {
	for _, mode := range []string{"failure delay", "response delay"} {
		t.Run(mode, func(t *testing.T) {
			e, srv, err := NewServer(Options{})
			if err != nil {
				t.Fatal(err)
			}
			e.AddClient(clientID, secret)
			if mode == "failure delay" {
				e.FailNext(1, Failure{Delay: time.Hour})
			} else {
				e.SetResponseDelay(time.Hour)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+e.TokenPath(), strings.NewReader(validForm().Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
				t.Fatal("request answered despite the delay")
			}

			closed := make(chan struct{})
			go func() { srv.Close(); close(closed) }()
			select {
			case <-closed:
			case <-time.After(10 * time.Second):
				t.Fatal("server still waiting on the delayed handler")
			}
			if e.IssuedTokens() != 0 {
				t.Errorf("IssuedTokens = %d, want 0", e.IssuedTokens())
			}
		})
	}
}

func TestSetTokenLifetime(t *testing.T) {
	e, srv := startEmulator(t, Options{})
	for _, tt := range []struct {
		lifetime time.Duration
		want     float64
	}{{5 * time.Minute, 300}, {1500 * time.Millisecond, 1}, {time.Millisecond, 1}} {
		e.SetTokenLifetime(tt.lifetime)
		if r := post(t, srv.URL+e.TokenPath(), validForm()); r.body["expires_in"] != tt.want {
			t.Errorf("lifetime %s: expires_in = %v, want %v", tt.lifetime, r.body["expires_in"], tt.want)
		}
	}
}

func TestSetTokenFormat(t *testing.T) {
	e, srv := startEmulator(t, Options{})
	e.SetTokenFormat(TokenV2)
	v2, _ := post(t, srv.URL+e.TokenPath(), validForm()).body["access_token"].(string)
	claims, err := e.Verify(v2)
	if err != nil {
		t.Fatalf("a v2.0 token does not verify: %v", err)
	}
	if claims.Version != "2.0" || claims.AppID != "" || claims.AuthorizedParty != clientID ||
		claims.TenantID != e.TenantID() || !uuidPattern.MatchString(claims.Audience) {
		t.Errorf("v2.0 claims: ver %q appid %q azp %q tid %q aud %q; want 2.0, none, the client, the tenant, a GUID",
			claims.Version, claims.AppID, claims.AuthorizedParty, claims.TenantID, claims.Audience)
	}

	e.SetTokenFormat(TokenOpaque)
	r := post(t, srv.URL+e.TokenPath(), validForm())
	opaque, _ := r.body["access_token"].(string)
	if r.status != http.StatusOK || opaque == "" || strings.Count(opaque, ".") == 2 {
		t.Fatalf("opaque token: status %d, want 200 and a token that is not a JWT", r.status)
	}
	if _, err := e.Verify(opaque); err == nil {
		t.Error("Verify accepted an opaque token")
	}

	e.SetTokenFormat(TokenV1)
	v1, _ := post(t, srv.URL+e.TokenPath(), validForm()).body["access_token"].(string)
	if claims, err := e.Verify(v1); err != nil || claims.Version != "1.0" || claims.AppID != clientID {
		t.Errorf("back to v1.0: %+v, %v", claims, err)
	}
}

func TestJWKSVerifiesTokens(t *testing.T) {
	e, srv := startEmulator(t, Options{})
	resp, err := http.Get(srv.URL + "/" + e.TenantID() + "/discovery/v2.0/keys")
	if err != nil {
		t.Fatal(err)
	}
	var jwks struct {
		Keys []struct {
			Kty, Use, Kid, X5t, N, E string
			X5c                      []string
		}
	}
	err = json.NewDecoder(resp.Body).Decode(&jwks)
	resp.Body.Close()
	if err != nil || len(jwks.Keys) != 1 {
		t.Fatalf("JWKS: %v, %d keys", err, len(jwks.Keys))
	}
	k := jwks.Keys[0]
	if k.Kty != "RSA" || k.Use != "sig" || k.Kid != e.KeyID() || k.X5t != k.Kid {
		t.Errorf("key = %+v", k)
	}
	der, _ := base64.StdEncoding.DecodeString(k.X5c[0])
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha1.Sum(der); base64.RawURLEncoding.EncodeToString(sum[:]) != k.Kid {
		t.Error("kid is not the certificate thumbprint")
	}
	n, _ := base64.RawURLEncoding.DecodeString(k.N)
	eb, _ := base64.RawURLEncoding.DecodeString(k.E)
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(eb).Int64())}
	if pub.N.BitLen() != 2048 || !pub.Equal(cert.PublicKey) {
		t.Errorf("n/e do not match the certificate (%d bits)", pub.N.BitLen())
	}

	// A token verifies with the published key alone, as a resource would.
	r := post(t, srv.URL+e.TokenPath(), validForm())
	token, err := jwt.Parse(r.body["access_token"].(string), func(tok *jwt.Token) (any, error) {
		if tok.Header["kid"] != k.Kid {
			t.Errorf("token kid = %v, want %s", tok.Header["kid"], k.Kid)
		}
		return pub, nil
	}, jwt.WithValidMethods([]string{"RS256"}), jwt.WithAudience("https://graph.microsoft.com"))
	if err != nil || !token.Valid {
		t.Fatalf("token does not verify with the JWKS: %v", err)
	}
	if aud, ok := token.Claims.(jwt.MapClaims)["aud"].(string); !ok || aud != "https://graph.microsoft.com" {
		t.Errorf("aud = %#v, want a plain string", token.Claims.(jwt.MapClaims)["aud"])
	}
}

func TestOpenIDConfiguration(t *testing.T) {
	e, srv := startEmulator(t, Options{Issuer: "https://issuer.example/"})
	resp, err := http.Get(srv.URL + "/" + e.TenantID() + "/v2.0/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&doc)
	resp.Body.Close()
	if doc["token_endpoint"] != srv.URL+e.TokenPath() ||
		doc["jwks_uri"] != srv.URL+"/"+e.TenantID()+"/discovery/v2.0/keys" ||
		doc["issuer"] != "https://issuer.example/" {
		t.Errorf("openid-configuration = %v", doc)
	}

	resp, err = http.Get(srv.URL + "/other-tenant/v2.0/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("unknown tenant: status %d, want 400", resp.StatusCode)
	}
}

func TestVerifyRejects(t *testing.T) {
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e, srv := startEmulator(t, Options{Now: clock, TokenLifetime: time.Hour})
	other, otherSrv := startEmulator(t, Options{})

	token := post(t, srv.URL+e.TokenPath(), validForm()).body["access_token"].(string)
	foreign := post(t, otherSrv.URL+other.TokenPath(), validForm()).body["access_token"].(string)
	if _, err := e.Verify(token); err != nil {
		t.Fatalf("own token: %v", err)
	}
	if _, err := e.Verify(foreign); err == nil {
		t.Error("token of another emulator verified")
	}
	parts := strings.Split(token, ".")
	claims, _ := base64.RawURLEncoding.DecodeString(parts[1])
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(claims), "graph", "grapf", 1))) + "." + parts[2]
	if _, err := e.Verify(tampered); err == nil {
		t.Error("tampered token verified")
	}
	if _, err := e.Verify("not-a-jwt"); err == nil {
		t.Error("garbage verified")
	}

	mu.Lock()
	now = now.Add(time.Hour + time.Second)
	mu.Unlock()
	if _, err := e.Verify(token); err == nil {
		t.Error("expired token verified")
	}
}

func TestNewOptions(t *testing.T) {
	for _, tenant := range []string{"a/b", "..", "a b", "x?y"} {
		if _, err := New(Options{TenantID: tenant}); err == nil {
			t.Errorf("New(TenantID %q) succeeded", tenant)
		}
	}
	if _, err := New(Options{TokenLifetime: -time.Second}); err == nil {
		t.Error("negative lifetime accepted")
	}
	e, err := New(Options{TenantID: "contoso.onmicrosoft.com"})
	if err != nil {
		t.Fatal(err)
	}
	if e.TenantID() != "contoso.onmicrosoft.com" || e.TokenPath() != "/contoso.onmicrosoft.com/oauth2/v2.0/token" ||
		e.Issuer() != "https://sts.windows.net/contoso.onmicrosoft.com/" {
		t.Errorf("TenantID, TokenPath, Issuer = %q, %q, %q", e.TenantID(), e.TokenPath(), e.Issuer())
	}
}

func TestConcurrentRequests(t *testing.T) {
	e, srv := startEmulator(t, Options{})
	e.FailNext(5, Failure{Status: 503})
	const n = 40
	var wg sync.WaitGroup
	statuses := make(chan int, n)
	for range n {
		wg.Go(func() {
			resp, err := http.PostForm(srv.URL+e.TokenPath(), validForm())
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			statuses <- resp.StatusCode
		})
		wg.Go(func() { e.AddClient("other", "x") }) // registrations race with requests
	}
	wg.Wait()
	close(statuses)
	failed := 0
	for s := range statuses {
		if s != 200 {
			failed++
		}
	}
	if failed != 5 || e.TokenRequests() != n || e.IssuedTokens() != n-5 {
		t.Errorf("failed, TokenRequests, IssuedTokens = %d, %d, %d; want 5, %d, %d", failed, e.TokenRequests(), e.IssuedTokens(), n, n-5)
	}
}
