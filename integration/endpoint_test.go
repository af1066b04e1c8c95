package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/entra/entratest"
)

const testIdentityHeader = "identity-header-Do-Not-Log-58e1d0a7"

// endpointCaddyfile serves the three token endpoints beside an entra_token
// route, on loopback and on {$TEST_EXTRA_BIND} (a non-loopback address of
// this machine, when it has one).
var endpointCaddyfile = `{
	admin 127.0.0.1:%[2]d
	debug
	entra {
` + testIdentity + `
		redis {env.TEST_REDIS_URL} {
			key_prefix ` + testKeyPrefix + `
			insecure_plaintext
		}
		application orders-api ` + testScope + `
		application graph-api https://graph.microsoft.com/.default
		application broken-api api://broken/.default {
			client_id     99999999-0000-4000-8000-00000000b0c5
			client_secret {env.TEST_CLIENT_SECRET}
		}
	}
}

:%[1]d {
	bind 127.0.0.1 {$TEST_EXTRA_BIND}
	handle_path /orders/* {
		entra_token orders-api
		reverse_proxy {$TEST_UPSTREAM}
	}
	handle /token {
		entra_token_endpoint record {
			secret {env.TEST_IDENTITY_HEADER}
			application orders-api broken-api
		}
	}
	handle /msi/token {
		entra_token_endpoint app_service {
			secret {env.TEST_IDENTITY_HEADER}
			application orders-api
		}
	}
	handle /metadata/identity/oauth2/token* {
		entra_token_endpoint imds {
			application orders-api
		}
	}
	respond 404
}
`

// nonLoopbackIPv4 returns an IPv4 address of this machine that is not on
// loopback, or "".
func nonLoopbackIPv4() string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ""
	}
	for _, addr := range addrs {
		if ipnet, ok := addr.(*net.IPNet); ok && !ipnet.IP.IsLoopback() && ipnet.IP.To4() != nil && !ipnet.IP.IsLinkLocalUnicast() {
			return ipnet.IP.String()
		}
	}
	return ""
}

// decode parses a JSON object body.
func decode(t *testing.T, body string) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("body is not a JSON object: %q", body)
	}
	return v
}

// sendMethod sends a request with method, header and body.
func sendMethod(t *testing.T, method, url string, header http.Header, body string) response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for name, values := range header {
		req.Header[name] = values
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return response{Status: resp.StatusCode, Header: resp.Header, Body: string(raw)}
}

// TestTokenEndpointRefusalsMakeNoTokenRequest: every refusal, over the real
// binary, answers without a token and before any token request.
func TestTokenEndpointRefusalsMakeNoTokenRequest(t *testing.T) {
	f := newFleet(t)
	extra := nonLoopbackIPv4()
	env := append(f.env(testClientSecret), "TEST_IDENTITY_HEADER="+testIdentityHeader, "TEST_EXTRA_BIND="+extra)
	s := startSidecar(t, endpointCaddyfile, env...)
	secret := http.Header{"X-Identity-Header": {testIdentityHeader}}
	metadata := http.Header{"Metadata": {"true"}}
	withHeader := func(base http.Header, name, value string) http.Header {
		h := base.Clone()
		h.Set(name, value)
		return h
	}
	const (
		msi  = "/msi/token?api-version=2019-08-01&resource=api://orders"
		imds = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=api://orders"
		rec  = "/token?applicationName=orders-api"
	)
	cases := []struct {
		name   string
		url    string
		header http.Header
		status int
	}{
		{"record without secret", s.URL + rec, nil, http.StatusUnauthorized},
		{"record with a wrong secret", s.URL + rec, withHeader(secret, "X-Identity-Header", "nope-"+testIdentityHeader), http.StatusForbidden},
		{"record of an application not allowed", s.URL + "/token?applicationName=graph-api", secret, http.StatusNotFound},
		{"record of an unknown application", s.URL + "/token?applicationName=nope", secret, http.StatusNotFound},
		{"record through a proxy", s.URL + rec, withHeader(secret, "X-Forwarded-For", "127.0.0.1"), http.StatusBadRequest},
		{"record with Via", s.URL + rec, withHeader(secret, "Via", "1.1 proxy"), http.StatusBadRequest},
		{"record with X-Real-IP", s.URL + rec, withHeader(secret, "X-Real-IP", "127.0.0.1"), http.StatusBadRequest},
		{"app_service without secret", s.URL + msi, nil, http.StatusUnauthorized},
		{"app_service with a wrong secret", s.URL + msi, withHeader(secret, "X-Identity-Header", "nope"), http.StatusForbidden},
		{"app_service for an unknown resource", s.URL + "/msi/token?api-version=2019-08-01&resource=https://vault.azure.net", secret, http.StatusBadRequest},
		{"app_service for an application not allowed", s.URL + "/msi/token?api-version=2019-08-01&resource=https://graph.microsoft.com/", secret, http.StatusBadRequest},
		{"app_service for another client_id", s.URL + msi + "&client_id=99999999-0000-4000-8000-00000000b0c5", secret, http.StatusBadRequest},
		{"imds without Metadata", s.URL + imds, nil, http.StatusBadRequest},
		{"imds through a proxy", s.URL + imds, withHeader(metadata, "X-Forwarded-For", "10.0.0.1"), http.StatusBadRequest},
		{"imds with Forwarded", s.URL + imds, withHeader(metadata, "Forwarded", "for=10.0.0.1"), http.StatusBadRequest},
		{"imds with Via", s.URL + imds, withHeader(metadata, "Via", "1.1 proxy"), http.StatusBadRequest},
		{"imds with X-Forwarded-Host", s.URL + imds, withHeader(metadata, "X-Forwarded-Host", "localhost"), http.StatusBadRequest},
		{"imds for another client_id", s.URL + imds + "&client_id=99999999-0000-4000-8000-00000000b0c5", metadata, http.StatusBadRequest},
	}
	if extra != "" {
		remote := strings.Replace(s.URL, "127.0.0.1", extra, 1)
		cases = append(cases,
			struct {
				name   string
				url    string
				header http.Header
				status int
			}{"record from a non-loopback peer", remote + rec, secret, http.StatusForbidden},
			struct {
				name   string
				url    string
				header http.Header
				status int
			}{"imds from a non-loopback peer", remote + imds, metadata, http.StatusForbidden})
	} else {
		t.Log("no non-loopback address on this machine: the peer check is covered by caddymodule's unit test only")
	}
	for _, tc := range cases {
		resp := send(t, tc.url, tc.header)
		if resp.Status != tc.status {
			t.Errorf("%s: status %d, want %d: %s", tc.name, resp.Status, tc.status, resp.Body)
		}
		if strings.Contains(resp.Body, "eyJ") || strings.Contains(resp.Body, "access_token") || strings.Contains(resp.Body, "accessToken") {
			t.Errorf("%s: the refusal holds a token", tc.name)
		}
		if resp.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: Cache-Control %q", tc.name, resp.Header.Get("Cache-Control"))
		}
	}
	if got := f.emulator.TokenRequests(); got != 0 {
		t.Errorf("token requests = %d, want none for refused requests", got)
	}
	if strings.Contains(s.logs(), testIdentityHeader) {
		t.Error("the endpoint secret appears in the logs")
	}
}

// TestTokenEndpointRecordIsWhatEntraTokenInjects: the record protocol hands
// better-auth-client-credential's record, from the same cache and Redis record
// as entra_token, and answers that library's codes and statuses.
func TestTokenEndpointRecordIsWhatEntraTokenInjects(t *testing.T) {
	f := newFleet(t)
	env := append(f.env(testClientSecret), "TEST_IDENTITY_HEADER="+testIdentityHeader)
	s := startSidecar(t, endpointCaddyfile, env...)
	secret := http.Header{"X-Identity-Header": {testIdentityHeader}}

	// Throttled before any token: 503 with Retry-After, the library's code.
	f.emulator.FailNext(1, entratest.Failure{Status: http.StatusTooManyRequests, RetryAfter: "1"})
	throttled := send(t, s.URL+"/token?applicationName=orders-api", secret)
	if body := decode(t, throttled.Body); throttled.Status != http.StatusServiceUnavailable ||
		throttled.Header.Get("Retry-After") == "" || body["code"] != "MICROSOFT_TOKEN_REQUEST_FAILED" {
		t.Fatalf("throttled: status %d Retry-After %q body %s", throttled.Status, throttled.Header.Get("Retry-After"), throttled.Body)
	}
	// Wait out the fleet's backoff (a real second: the sidecar runs apart).
	var injected string
	waitFor(t, "the throttling to end", 10*time.Second, func() error {
		if status, body := get(t, s.URL+"/orders/a", nil); status != http.StatusOK {
			return fmt.Errorf("status %d: %s", status, body)
		}
		seen := f.upstream.requests()
		injected = bearer(t, seen[len(seen)-1])
		return nil
	})

	post := sendMethod(t, http.MethodPost, s.URL+"/token",
		http.Header{"X-Identity-Header": {testIdentityHeader}, "Content-Type": {"application/json"}}, `{"applicationName": "orders-api"}`)
	if post.Status != http.StatusOK {
		t.Fatalf("POST: status %d: %s", post.Status, post.Body)
	}
	record := decode(t, post.Body)
	fields := make([]string, 0, len(record))
	for name := range record {
		fields = append(fields, name)
	}
	slices.Sort(fields)
	if want := []string{"accessToken", "accessTokenExpiresAt", "applicationName", "createdAt", "id", "scope", "updatedAt"}; !slices.Equal(fields, want) {
		t.Errorf("fields %v, want exactly better-auth-client-credential's %v", fields, want)
	}
	if record["accessToken"] != injected {
		t.Error("the record's token is not the one entra_token injects")
	}
	stored := f.records(t)
	if len(stored) != 1 {
		t.Fatalf("redis holds %d records, want 1", len(stored))
	}
	for _, r := range stored {
		if record["id"] != r["id"] || record["accessToken"] != r["accessToken"] || record["scope"] != testScope || record["applicationName"] != "orders-api" {
			t.Errorf("the record is not redis's: id %v vs %v", record["id"], r["id"])
		}
	}
	for _, field := range []string{"accessTokenExpiresAt", "createdAt", "updatedAt"} {
		if _, err := time.Parse(time.RFC3339, record[field].(string)); err != nil {
			t.Errorf("%s is not RFC 3339: %v", field, err)
		}
	}
	byGet := send(t, s.URL+"/token?applicationName=orders-api", secret)
	if body := decode(t, byGet.Body); byGet.Status != http.StatusOK || body["id"] != record["id"] || body["accessToken"] != injected {
		t.Errorf("GET: status %d, not the same record", byGet.Status)
	}

	// better-auth-client-credential's codes and statuses.
	for _, tc := range []struct {
		application string
		status      int
		code        string
	}{
		{"nope", http.StatusNotFound, "MICROSOFT_APPLICATION_NOT_FOUND"},
		{"graph-api", http.StatusNotFound, "MICROSOFT_APPLICATION_NOT_FOUND"}, // configured, not allowed here
		{"broken-api", http.StatusBadGateway, "MICROSOFT_TOKEN_REQUEST_FAILED"},
	} {
		resp := send(t, s.URL+"/token?applicationName="+tc.application, secret)
		body := decode(t, resp.Body)
		if resp.Status != tc.status || body["code"] != tc.code || body["message"] == "" || len(body) != 2 {
			t.Errorf("%s: status %d body %s, want %d %s", tc.application, resp.Status, resp.Body, tc.status, tc.code)
		}
	}
	if got := f.emulator.TokenRequests(); got != 3 {
		t.Errorf("token requests = %d, want 3 (throttled, orders-api, broken-api)", got)
	}
	assertNoSecrets(t, s.logs(), injected)
	if strings.Contains(s.logs(), testIdentityHeader) {
		t.Error("the endpoint secret appears in the logs")
	}

	// The metric counts tokens handed out, per application and protocol.
	metrics := send(t, s.AdminURL+"/metrics", nil)
	if !strings.Contains(metrics.Body, `caddy_entra_endpoint_tokens_total{application="orders-api",protocol="record"} 2`) {
		t.Errorf("metrics lack endpoint_tokens_total for orders-api/record = 2:\n%s", grepLines(metrics.Body, "endpoint_"))
	}
	if strings.Contains(metrics.Body, injected) {
		t.Error("the metrics hold the token")
	}
}

// grepLines returns the lines of s that contain substr.
func grepLines(s, substr string) string {
	var kept []string
	for line := range strings.SplitSeq(s, "\n") {
		if strings.Contains(line, substr) {
			kept = append(kept, line)
		}
	}
	return strings.Join(kept, "\n")
}
