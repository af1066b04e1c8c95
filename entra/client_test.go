package entra_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/entra/entratest"
)

const (
	testClientID = "11111111-2222-4333-8444-555555555555"
	testSecret   = "s3cr3t~value.that-must-never-leak"
	graphScope   = "https://graph.microsoft.com/.default"
)

// newEmulator starts an emulator with one registered client and returns a
// Client configured against it.
func newEmulator(t *testing.T, timeout time.Duration) (*entratest.Emulator, *entra.Client) {
	t.Helper()
	emu, srv, err := entratest.NewServer(entratest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	emu.AddClient(testClientID, testSecret)
	client, err := entra.NewClient(entra.Config{
		TenantID:      emu.TenantID(),
		ClientID:      testClientID,
		ClientSecret:  testSecret,
		AuthorityHost: srv.URL + "/",
		Timeout:       timeout,
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := srv.URL + emu.TokenPath(); client.TokenEndpoint() != want {
		t.Fatalf("TokenEndpoint() = %q, want %q", client.TokenEndpoint(), want)
	}
	return emu, client
}

// requestError asserts that err is a *RequestError whose message does not
// contain the secret, and returns it.
func requestError(t *testing.T, err error) *entra.RequestError {
	t.Helper()
	if err == nil {
		t.Fatal("Token() succeeded, want an error")
	}
	var reqErr *entra.RequestError
	if !errors.As(err, &reqErr) {
		t.Fatalf("error %T (%v) is not a *entra.RequestError", err, err)
	}
	if strings.Contains(err.Error(), testSecret) {
		t.Fatalf("error message contains the client secret: %s", err)
	}
	return reqErr
}

func TestTokenSuccess(t *testing.T) {
	emu, client := newEmulator(t, 0)
	emu.SetTokenLifetime(30 * time.Minute)

	before := time.Now()
	token, err := client.Token(context.Background(), []string{graphScope})
	after := time.Now()
	if err != nil {
		t.Fatalf("Token() error: %v", err)
	}

	claims, err := emu.Verify(token.AccessToken)
	if err != nil {
		t.Fatalf("Verify() error: %v", err)
	}
	if claims.Audience != "https://graph.microsoft.com" {
		t.Errorf("aud = %q, want https://graph.microsoft.com", claims.Audience)
	}
	if claims.AppID != testClientID || claims.TenantID != emu.TenantID() {
		t.Errorf("appid, tid = %q, %q; want %q, %q", claims.AppID, claims.TenantID, testClientID, emu.TenantID())
	}
	if token.TokenType != "Bearer" {
		t.Errorf("TokenType = %q, want Bearer", token.TokenType)
	}
	if token.ExpiresIn != 30*time.Minute || token.ExtExpiresIn != 30*time.Minute {
		t.Errorf("ExpiresIn, ExtExpiresIn = %s, %s; want 30m both", token.ExpiresIn, token.ExtExpiresIn)
	}
	// ExpiresAt counts from when the request was sent: between the bounds.
	if token.ExpiresAt.Before(before.Add(30*time.Minute)) || token.ExpiresAt.After(after.Add(30*time.Minute)) {
		t.Errorf("ExpiresAt = %s, want within [%s, %s] + 30m", token.ExpiresAt, before, after)
	}
	if emu.TokenRequests() != 1 || emu.IssuedTokens() != 1 {
		t.Errorf("TokenRequests, IssuedTokens = %d, %d; want 1, 1", emu.TokenRequests(), emu.IssuedTokens())
	}

	second, err := client.Token(context.Background(), []string{graphScope})
	if err != nil {
		t.Fatal(err)
	}
	if second.AccessToken == token.AccessToken {
		t.Error("two requests returned the same access token")
	}
}

func TestTokenWrongSecret(t *testing.T) {
	emu, srv, err := entratest.NewServer(entratest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	emu.AddClient(testClientID, "the-right-secret")
	client, err := entra.NewClient(entra.Config{
		TenantID: emu.TenantID(), ClientID: testClientID, ClientSecret: testSecret, AuthorityHost: srv.URL,
	})
	if err != nil {
		t.Fatal(err)
	}

	_, err = client.Token(context.Background(), []string{graphScope})
	reqErr := requestError(t, err)
	if reqErr.StatusCode != http.StatusUnauthorized || reqErr.Code != "invalid_client" {
		t.Errorf("StatusCode, Code = %d, %q; want 401, invalid_client", reqErr.StatusCode, reqErr.Code)
	}
	if len(reqErr.ErrorCodes) != 1 || reqErr.ErrorCodes[0] != 7000215 {
		t.Errorf("ErrorCodes = %v, want [7000215]", reqErr.ErrorCodes)
	}
	if reqErr.TraceID == "" || reqErr.CorrelationID == "" {
		t.Errorf("TraceID, CorrelationID = %q, %q; want both set", reqErr.TraceID, reqErr.CorrelationID)
	}
	if !strings.HasPrefix(reqErr.Description, "AADSTS7000215: Invalid client secret provided.") || strings.ContainsAny(reqErr.Description, "\r\n") {
		t.Errorf("Description = %q, want the first line of Entra's description", reqErr.Description)
	}
	msg := err.Error()
	for _, want := range []string{"entra: token request failed", "status 401", "invalid_client", "AADSTS7000215", "Invalid client secret provided", "trace_id=" + reqErr.TraceID, "correlation_id=" + reqErr.CorrelationID} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q does not contain %q", msg, want)
		}
	}
	if emu.IssuedTokens() != 0 {
		t.Errorf("IssuedTokens = %d, want 0", emu.IssuedTokens())
	}
}

func TestTokenEndpointErrors(t *testing.T) {
	tests := []struct {
		name     string
		clientID string
		scopes   []string
		status   int
		code     string
		aadsts   int
	}{
		{"unknown client", "99999999-0000-4000-8000-000000000000", []string{graphScope}, 400, "unauthorized_client", 700016},
		{"scope without .default", testClientID, []string{"https://graph.microsoft.com/User.Read"}, 400, "invalid_scope", 1002012},
		{"two resources", testClientID, []string{graphScope, "api://other/.default"}, 400, "invalid_scope", 28000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			emu, srv, err := entratest.NewServer(entratest.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			emu.AddClient(testClientID, testSecret)
			client, err := entra.NewClient(entra.Config{
				TenantID: emu.TenantID(), ClientID: tt.clientID, ClientSecret: testSecret, AuthorityHost: srv.URL,
			})
			if err != nil {
				t.Fatal(err)
			}
			_, err = client.Token(context.Background(), tt.scopes)
			reqErr := requestError(t, err)
			if reqErr.StatusCode != tt.status || reqErr.Code != tt.code {
				t.Errorf("StatusCode, Code = %d, %q; want %d, %q", reqErr.StatusCode, reqErr.Code, tt.status, tt.code)
			}
			if len(reqErr.ErrorCodes) != 1 || reqErr.ErrorCodes[0] != tt.aadsts {
				t.Errorf("ErrorCodes = %v, want [%d]", reqErr.ErrorCodes, tt.aadsts)
			}
		})
	}
}

func TestTokenUnknownTenant(t *testing.T) {
	emu, srv, err := entratest.NewServer(entratest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	emu.AddClient(testClientID, testSecret)
	client, err := entra.NewClient(entra.Config{
		TenantID: "contoso.onmicrosoft.com", ClientID: testClientID, ClientSecret: testSecret, AuthorityHost: srv.URL,
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.Token(context.Background(), []string{graphScope})
	reqErr := requestError(t, err)
	if reqErr.Code != "invalid_request" || len(reqErr.ErrorCodes) != 1 || reqErr.ErrorCodes[0] != 90002 {
		t.Errorf("Code, ErrorCodes = %q, %v; want invalid_request, [90002]", reqErr.Code, reqErr.ErrorCodes)
	}
}

func TestTokenNoScope(t *testing.T) {
	emu, client := newEmulator(t, 0)
	_, err := client.Token(context.Background(), []string{" ", ""})
	if !errors.Is(err, entra.ErrNoScope) {
		t.Fatalf("error = %v, want ErrNoScope", err)
	}
	requestError(t, err)
	if emu.TokenRequests() != 0 {
		t.Errorf("TokenRequests = %d, want 0: no request without a scope", emu.TokenRequests())
	}
}

func TestTokenRetryAfter(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		retryAfter string
		// dateIn, when set, makes retryAfter the HTTP-date this far from the
		// moment the subtest runs, so that earlier subtests use none of it.
		dateIn   time.Duration
		min, max time.Duration
	}{
		{"429 delta-seconds", http.StatusTooManyRequests, "17", 0, 17 * time.Second, 17 * time.Second},
		{"503 delta-seconds", http.StatusServiceUnavailable, "120", 0, 2 * time.Minute, 2 * time.Minute},
		// An HTTP-date has whole seconds and is read against the clock.
		{"429 HTTP-date", http.StatusTooManyRequests, "", 30 * time.Second, 28 * time.Second, 31 * time.Second},
		{"503 HTTP-date", http.StatusServiceUnavailable, "", time.Hour, 59 * time.Minute, 61 * time.Minute},
		{"date in the past", http.StatusServiceUnavailable, "Mon, 02 Jan 2006 15:04:05 GMT", 0, 0, 0},
		{"malformed", http.StatusTooManyRequests, "soon", 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			emu, client := newEmulator(t, 0)
			retryAfter := tt.retryAfter
			if tt.dateIn != 0 {
				retryAfter = time.Now().Add(tt.dateIn).UTC().Format(http.TimeFormat)
			}
			emu.FailNext(1, entratest.Failure{Status: tt.status, RetryAfter: retryAfter})
			_, err := client.Token(context.Background(), []string{graphScope})
			reqErr := requestError(t, err)
			if reqErr.StatusCode != tt.status {
				t.Errorf("StatusCode = %d, want %d", reqErr.StatusCode, tt.status)
			}
			if reqErr.RetryAfter < tt.min || reqErr.RetryAfter > tt.max {
				t.Errorf("RetryAfter = %s, want within [%s, %s]", reqErr.RetryAfter, tt.min, tt.max)
			}
			if reqErr.Code != "temporarily_unavailable" {
				t.Errorf("Code = %q, want temporarily_unavailable", reqErr.Code)
			}
			// The failure was consumed: the next request succeeds.
			if _, err := client.Token(context.Background(), []string{graphScope}); err != nil {
				t.Errorf("request after the failure: %v", err)
			}
		})
	}
}

func TestTokenTimeout(t *testing.T) {
	emu, client := newEmulator(t, 100*time.Millisecond)
	emu.FailNext(1, entratest.Failure{Delay: time.Minute})

	start := time.Now()
	_, err := client.Token(context.Background(), []string{graphScope})
	elapsed := time.Since(start)

	reqErr := requestError(t, err)
	if reqErr.StatusCode != 0 {
		t.Errorf("StatusCode = %d, want 0 (no response)", reqErr.StatusCode)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v does not wrap context.DeadlineExceeded", err)
	}
	if !strings.Contains(err.Error(), "timed out after 100ms") {
		t.Errorf("message %q does not say it timed out", err)
	}
	if elapsed > 5*time.Second {
		t.Errorf("Token() took %s with a 100ms timeout", elapsed)
	}
}

func TestTokenCallerCancel(t *testing.T) {
	emu, client := newEmulator(t, 0)
	emu.FailNext(1, entratest.Failure{Delay: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := client.Token(ctx, []string{graphScope})
	requestError(t, err)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error %v does not wrap context.Canceled", err)
	}
}

func TestTokenMalformedSuccessResponses(t *testing.T) {
	tests := []struct {
		name        string
		failure     entratest.Failure
		wantErr     error
		wantStatus  int
		wantMessage string
	}{
		{"body over 1 MiB", entratest.Failure{Status: 200, Body: `{"access_token":"` + strings.Repeat("a", entra.MaxResponseBytes) + `","expires_in":3599}`}, entra.ErrResponseTooLarge, 200, "exceeds 1 MiB"},
		{"200 with HTML", entratest.Failure{Status: 200, Body: "<html><body>Sign in</body></html>", ContentType: "text/html"}, entra.ErrMalformedResponse, 200, "not a JSON object"},
		{"502 with HTML", entratest.Failure{Status: 502, Body: "<html>Bad Gateway " + testSecret + "</html>", ContentType: "text/html"}, entra.ErrMalformedResponse, 502, "status 502"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			emu, client := newEmulator(t, 0)
			emu.FailNext(1, tt.failure)
			_, err := client.Token(context.Background(), []string{graphScope})
			reqErr := requestError(t, err)
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("error %v does not wrap %v", err, tt.wantErr)
			}
			if reqErr.StatusCode != tt.wantStatus {
				t.Errorf("StatusCode = %d, want %d", reqErr.StatusCode, tt.wantStatus)
			}
			if !strings.Contains(err.Error(), tt.wantMessage) {
				t.Errorf("message %q does not contain %q", err, tt.wantMessage)
			}
			if strings.Contains(err.Error(), "html") {
				t.Errorf("message %q contains the raw body", err)
			}
		})
	}
}

// TestTokenRequestShape checks the request itself, and that an endpoint
// echoing the secret does not get it into the error message.
func TestTokenRequestShape(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			t.Errorf("ParseForm: %v", err)
		}
		checks := map[string]string{
			"method":        r.Method,
			"content-type":  r.Header.Get("Content-Type"),
			"accept":        r.Header.Get("Accept"),
			"client_id":     r.PostForm.Get("client_id"),
			"client_secret": r.PostForm.Get("client_secret"),
			"scope":         r.PostForm.Get("scope"),
			"grant_type":    r.PostForm.Get("grant_type"),
			"query":         r.URL.RawQuery,
		}
		want := map[string]string{
			"method":        "POST",
			"content-type":  "application/x-www-form-urlencoded",
			"accept":        "application/json",
			"client_id":     testClientID,
			"client_secret": testSecret,
			"scope":         "api://a/.default api://a/other",
			"grant_type":    "client_credentials",
			"query":         "",
		}
		for k, v := range want {
			if checks[k] != v {
				t.Errorf("%s = %q, want %q", k, checks[k], v)
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":"invalid_request","error_description":"you sent ` + testSecret + `","error_codes":[1]}`))
	}))
	defer srv.Close()

	client, err := entra.NewClient(entra.Config{
		ClientID: testClientID, ClientSecret: testSecret, TokenEndpoint: srv.URL + "/custom/token",
	})
	if err != nil {
		t.Fatal(err)
	}
	if client.TokenEndpoint() != srv.URL+"/custom/token" {
		t.Errorf("TokenEndpoint() = %q", client.TokenEndpoint())
	}
	_, err = client.Token(context.Background(), []string{"api://a/.default", " api://a/other "})
	reqErr := requestError(t, err)
	if strings.Contains(reqErr.Description, testSecret) {
		t.Errorf("Description %q contains the secret", reqErr.Description)
	}
}

// TestTokenDoesNotFollowRedirects: a 307 would re-post the secret
// elsewhere; a caller's client (for a proxy or a CA of its own) follows
// none either.
func TestTokenDoesNotFollowRedirects(t *testing.T) {
	for name, caller := range map[string]*http.Client{"the shared client": nil, "a caller's client": {}} {
		t.Run(name, func(t *testing.T) { tokenDoesNotFollowRedirects(t, caller) })
	}
}

func tokenDoesNotFollowRedirects(t *testing.T, caller *http.Client) {
	posted := make(chan struct{}, 1)
	elsewhere := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		posted <- struct{}{}
	}))
	defer elsewhere.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL, http.StatusTemporaryRedirect)
	}))
	defer srv.Close()

	client, err := entra.NewClient(entra.Config{ClientID: testClientID, ClientSecret: testSecret, TokenEndpoint: srv.URL, HTTPClient: caller})
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.Token(context.Background(), []string{graphScope})
	if reqErr := requestError(t, err); reqErr.StatusCode != http.StatusTemporaryRedirect {
		t.Errorf("StatusCode = %d, want 307", reqErr.StatusCode)
	}
	select {
	case <-posted:
		t.Error("the redirect was followed")
	default:
	}
}

func TestTokenNetworkError(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	endpoint := srv.URL + "/t/oauth2/v2.0/token"
	srv.Close() // nothing listens any more

	client, err := entra.NewClient(entra.Config{ClientID: testClientID, ClientSecret: testSecret, TokenEndpoint: endpoint})
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.Token(context.Background(), []string{graphScope})
	reqErr := requestError(t, err)
	if reqErr.StatusCode != 0 || reqErr.Err == nil {
		t.Errorf("StatusCode, Err = %d, %v; want 0 and a cause", reqErr.StatusCode, reqErr.Err)
	}
}

func TestCredentialFingerprintBySecret(t *testing.T) {
	fingerprint := func(secret string) string {
		c, err := entra.NewClient(entra.Config{TenantID: "t", ClientID: "00000000-0000-4000-8000-0000000000c1", ClientSecret: secret})
		if err != nil {
			t.Fatal(err)
		}
		return c.CredentialFingerprint()
	}
	a, b := fingerprint("first-secret-value"), fingerprint("second-secret-value")
	if a == b || a != fingerprint("first-secret-value") {
		t.Error("fingerprints must be stable per secret and differ between secrets")
	}
	if strings.Contains(a, "first-secret-value") {
		t.Error("the fingerprint holds the secret")
	}
}

// How a credential is presented is part of what CredentialFingerprint
// identifies, so a permanent refusal of one presentation does not pause
// another (a secret in the form body or in a Basic header, a certificate
// signing an assertion, with x5c or without, or presented in mutual TLS);
// CacheKey tells apart only the presentations whose tokens differ: mutual
// TLS, whose tokens the server may bind to the certificate. The two mutual
// TLS methods send the same request and share both.
func TestCredentialFingerprintAndCacheKeyByPresentation(t *testing.T) {
	dir := t.TempDir()
	key := rsaKey(t, 0)
	certFile := writeFile(t, dir, "c.pem", certPEM(newCert(t, key, "orders-sidecar", false, nil, nil)))
	keyFile := writeFile(t, dir, "k.pem", pkcs1PEM(key))
	client := func(cfg entra.Config) *entra.Client {
		t.Helper()
		cfg.TokenEndpoint, cfg.ClientID = "https://idp.example/token", "orders-sidecar"
		c, err := entra.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	secret := func(clientAuth string) *entra.Client {
		return client(entra.Config{ClientSecret: "s3cret+value", ClientAuth: clientAuth})
	}
	certificate := func(clientAuth string, sendX5C bool) *entra.Client {
		return client(entra.Config{ClientAuth: clientAuth,
			ClientCertificate: &entra.CertificateCredential{CertFile: certFile, KeyFile: keyFile, SendX5C: sendX5C}})
	}
	for _, tt := range []struct {
		name                    string
		a, b                    *entra.Client
		sameCredential, sameKey bool
	}{
		{"secret: unset and post", secret(""), secret(entra.ClientAuthPost), true, true},
		{"secret: post and basic", secret(entra.ClientAuthPost), secret(entra.ClientAuthBasic), false, true},
		{"certificate: assertion and tls_client_auth", certificate("", false), certificate(entra.ClientAuthTLS, false), false, false},
		{"certificate: assertion and self_signed_tls_client_auth", certificate("", false), certificate(entra.ClientAuthSelfSignedTLS, false), false, false},
		{"certificate: tls_client_auth and self_signed_tls_client_auth", certificate(entra.ClientAuthTLS, false), certificate(entra.ClientAuthSelfSignedTLS, false), true, true},
		{"certificate: assertion without x5c and with", certificate("", false), certificate("", true), false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if same := tt.a.CredentialFingerprint() == tt.b.CredentialFingerprint(); same != tt.sameCredential {
				t.Errorf("the same CredentialFingerprint: %v, want %v", same, tt.sameCredential)
			}
			if same := tt.a.CacheKey() == tt.b.CacheKey(); same != tt.sameKey {
				t.Errorf("the same CacheKey: %v, want %v\n%q\n%q", same, tt.sameKey, tt.a.CacheKey(), tt.b.CacheKey())
			}
		})
	}
}

// FailureFingerprint follows the token in a federated token file, reading
// the file only when its stat changed or it was written in the last
// seconds: paused requests ask for it each.
func TestFailureFingerprintReadsTheFederatedTokenFileOnlyWhenItChanged(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "token")
	write := func(token string, at time.Time) {
		t.Helper()
		if err := os.WriteFile(path, []byte(token), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, at, at); err != nil {
			t.Fatal(err)
		}
	}
	client, err := entra.NewClient(entra.Config{TokenEndpoint: "https://idp.example/token", ClientID: "orders-sidecar", FederatedTokenFile: path})
	if err != nil {
		t.Fatal(err)
	}
	hourAgo := time.Now().Add(-time.Hour)
	write("token-one", hourAgo)
	one := client.FailureFingerprint()
	if one == client.CredentialFingerprint() {
		t.Fatal("FailureFingerprint names no token")
	}
	write("token-two", hourAgo) // same file, size and time: not read again
	if got := client.FailureFingerprint(); got != one {
		t.Error("the file was read again though its stat had not changed")
	}
	write("token-two", time.Now()) // written now: read
	two := client.FailureFingerprint()
	if two == one {
		t.Error("a token written now was not read")
	}
	// The kubelet's way: a new file renamed over the old one.
	if err := os.WriteFile(path+".new", []byte("token-333"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path+".new", hourAgo, hourAgo); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	if got := client.FailureFingerprint(); got == two || got == one {
		t.Error("a new file renamed over the old one was not read")
	}
}
