package entratokenendpoint

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-entra/caddy-entra/caddymodule/entraapp"
	"github.com/caddy-entra/caddy-entra/entra/entratest"
	"github.com/caddy-entra/caddy-entra/internal/apptest"
)

const unitEndpointSecret = "endpoint-secret-never-logged-9c2e"

// newTestEndpoint provisions an endpoint of protocol with options set by
// configure on app, logging to an observer.
func newTestEndpoint(t *testing.T, app *entraapp.App, protocol string, configure func(*TokenEndpoint)) (*TokenEndpoint, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	e := &TokenEndpoint{Protocol: protocol, logger: zap.New(core)}
	if protocol != ProtocolIMDS {
		e.Secret = unitEndpointSecret
	}
	if configure != nil {
		configure(e)
	}
	if err := e.provision(app); err != nil {
		t.Fatalf("provisioning the endpoint: %v", err)
	}
	return e, logs
}

// endpointRequest is a request from the application beside the sidecar.
func endpointRequest(method, target string, header map[string]string) *http.Request {
	req := httptest.NewRequest(method, "http://127.0.0.1:8080"+target, nil)
	req.RemoteAddr = "127.0.0.1:40000"
	for name, value := range header {
		req.Header.Set(name, value)
	}
	return req
}

// call runs one request through e and decodes the JSON answer.
func call(t *testing.T, e *TokenEndpoint, req *http.Request) (*httptest.ResponseRecorder, map[string]any) {
	t.Helper()
	rec := httptest.NewRecorder()
	if err := e.ServeHTTP(rec, req, nil); err != nil {
		t.Fatalf("ServeHTTP: %v", err)
	}
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("answer is not JSON (%d): %q", rec.Code, rec.Body.String())
	}
	if got := rec.Header().Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", got)
	}
	return rec, body
}

// keys returns a JSON object's field names, sorted.
func keys(body map[string]any) []string {
	names := make([]string, 0, len(body))
	for name := range body {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

func TestEndpointRecordIsTheLibraryRecord(t *testing.T) {
	app, emulator, _ := apptest.NewApp(t, apptest.ClientSecret)
	e, logs := newTestEndpoint(t, app, ProtocolRecord, nil)
	want, err := app.Token(t.Context(), "graph-api")
	if err != nil {
		t.Fatal(err)
	}
	post := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:8080/token", strings.NewReader(`{"applicationName": "graph-api"}`))
	post.RemoteAddr = "127.0.0.1:40000"
	post.Header.Set("X-IDENTITY-HEADER", unitEndpointSecret)
	post.Header.Set("Content-Type", "application/json")
	get := endpointRequest(http.MethodGet, "/token?applicationName=graph-api", map[string]string{"X-IDENTITY-HEADER": unitEndpointSecret})
	for _, req := range []*http.Request{post, get} {
		rec, body := call(t, e, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: status %d: %v", req.Method, rec.Code, body)
		}
		wantFields := []string{"accessToken", "accessTokenExpiresAt", "applicationName", "createdAt", "id", "scope", "updatedAt"}
		if got := keys(body); !slices.Equal(got, wantFields) {
			t.Errorf("%s: fields %v, want exactly %v", req.Method, got, wantFields)
		}
		if body["id"] != want.ID || body["accessToken"] != want.AccessToken || body["applicationName"] != "graph-api" ||
			body["scope"] != "https://graph.microsoft.com/.default" {
			t.Errorf("%s: the record is not the cache's", req.Method)
		}
		for _, field := range []string{"accessTokenExpiresAt", "createdAt", "updatedAt"} {
			if _, err := time.Parse(time.RFC3339, body[field].(string)); err != nil {
				t.Errorf("%s: %s is not RFC 3339: %v", req.Method, field, err)
			}
		}
	}
	if got := emulator.TokenRequests(); got != 1 {
		t.Errorf("token requests = %d, want 1 (the cache's one token)", got)
	}
	if got := testutil.ToFloat64(endpointTokens.WithLabelValues("graph-api", ProtocolRecord)); got < 2 {
		t.Errorf("endpoint_tokens_total{graph-api,record} = %v, want at least 2", got)
	}
	assertNoTokenInLogs(t, logs, want.AccessToken)
}

// assertNoTokenInLogs fails when a log entry holds the token or a secret.
func assertNoTokenInLogs(t *testing.T, logs *observer.ObservedLogs, token string) {
	t.Helper()
	for _, entry := range logs.All() {
		line, _ := json.Marshal(entry.ContextMap())
		text := string(line) + entry.Message
		if strings.Contains(text, token) || strings.Contains(text, unitEndpointSecret) || strings.Contains(text, apptest.ClientSecret) {
			t.Errorf("log %q holds a token or a secret", entry.Message)
		}
	}
}

func TestEndpointManagedIdentityAnswers(t *testing.T) {
	app, emulator, _ := apptest.NewApp(t, apptest.ClientSecret)
	appService, _ := newTestEndpoint(t, app, ProtocolAppService, nil)
	imds, _ := newTestEndpoint(t, app, ProtocolIMDS, nil)
	for _, tc := range []struct {
		endpoint *TokenEndpoint
		target   string
		header   map[string]string
		fields   []string
	}{
		{appService, "/msi/token?api-version=2019-08-01&resource=api://orders", map[string]string{"X-IDENTITY-HEADER": unitEndpointSecret},
			[]string{"access_token", "client_id", "expires_on", "resource", "token_type"}},
		{appService, "/msi/token?api-version=2019-08-01&resource=api://orders/&client_id=" + apptest.ClientID, map[string]string{"X-IDENTITY-HEADER": unitEndpointSecret},
			[]string{"access_token", "client_id", "expires_on", "resource", "token_type"}},
		{imds, "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=api://orders/", map[string]string{"Metadata": "true"},
			[]string{"access_token", "client_id", "expires_in", "expires_on", "ext_expires_in", "not_before", "refresh_token", "resource", "token_type"}},
		{imds, "/metadata/identity/oauth2/token?api-version=2019-08-01&resource=api://orders&client_id=" + strings.ToUpper(apptest.ClientID), map[string]string{"Metadata": "true"},
			[]string{"access_token", "client_id", "expires_in", "expires_on", "ext_expires_in", "not_before", "refresh_token", "resource", "token_type"}},
	} {
		rec, body := call(t, tc.endpoint, endpointRequest(http.MethodGet, tc.target, tc.header))
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: status %d: %v", tc.target, rec.Code, body)
		}
		if got := keys(body); !slices.Equal(got, tc.fields) {
			t.Errorf("%s: fields %v, want %v", tc.target, got, tc.fields)
		}
		for name, value := range body {
			if _, ok := value.(string); !ok {
				t.Errorf("%s: %s is %T, want a string (as the SDKs read it)", tc.target, name, value)
			}
		}
		claims, err := emulator.Verify(body["access_token"].(string))
		if err != nil || claims.Audience != "api://orders" {
			t.Errorf("%s: token for %v (%v), want api://orders", tc.target, claims, err)
		}
		if body["token_type"] != "Bearer" || body["client_id"] != apptest.ClientID {
			t.Errorf("%s: token_type %v client_id %v", tc.target, body["token_type"], body["client_id"])
		}
		expiresOn, _ := strconv.ParseInt(body["expires_on"].(string), 10, 64)
		if left := time.Until(time.Unix(expiresOn, 0)); left < 50*time.Minute {
			t.Errorf("%s: expires_on is %v away", tc.target, left)
		}
		if tc.endpoint == imds {
			expiresIn, _ := strconv.Atoi(body["expires_in"].(string))
			if expiresIn < 3000 || body["refresh_token"] != "" {
				t.Errorf("%s: expires_in %d refresh_token %q", tc.target, expiresIn, body["refresh_token"])
			}
		}
		if want := tc.target[strings.Index(tc.target, "resource=")+len("resource="):]; !strings.HasPrefix(want, body["resource"].(string)) {
			t.Errorf("%s: resource %v is not the one asked for", tc.target, body["resource"])
		}
	}
	if got := emulator.TokenRequests(); got != 1 {
		t.Errorf("token requests = %d, want 1", got)
	}
}

// TestEndpointRefusalsHandNoToken: every refusal answers in the protocol's
// shape, without a token and without a token request.
func TestEndpointRefusalsHandNoToken(t *testing.T) {
	app, emulator, _ := apptest.NewApp(t, apptest.ClientSecret)
	record, _ := newTestEndpoint(t, app, ProtocolRecord, func(e *TokenEndpoint) { e.Applications = []string{"orders-api"} })
	appService, _ := newTestEndpoint(t, app, ProtocolAppService, func(e *TokenEndpoint) { e.Applications = []string{"orders-api"} })
	imds, _ := newTestEndpoint(t, app, ProtocolIMDS, nil)
	secret := map[string]string{"X-IDENTITY-HEADER": unitEndpointSecret}
	metadata := map[string]string{"Metadata": "true"}
	with := func(base map[string]string, name, value string) map[string]string {
		h := map[string]string{name: value}
		for k, v := range base {
			if k != name {
				h[k] = v
			}
		}
		return h
	}
	const (
		asOK      = "/msi/token?api-version=2019-08-01&resource=api://orders"
		imdsOK    = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=api://orders"
		recordOK  = "/token?applicationName=orders-api"
		otherUUID = "33333333-0000-4000-8000-0000000000c2"
	)
	for _, tc := range []struct {
		name       string
		endpoint   *TokenEndpoint
		method     string
		target     string
		header     map[string]string
		remoteAddr string
		status     int
	}{
		{"record without secret", record, http.MethodGet, recordOK, nil, "", http.StatusUnauthorized},
		{"record with a wrong secret", record, http.MethodGet, recordOK, with(secret, "X-IDENTITY-HEADER", "wrong-"+unitEndpointSecret), "", http.StatusForbidden},
		{"record of an application not allowed here", record, http.MethodGet, "/token?applicationName=graph-api", secret, "", http.StatusNotFound},
		{"record of an unknown application", record, http.MethodGet, "/token?applicationName=nope", secret, "", http.StatusNotFound},
		{"record from a remote peer", record, http.MethodGet, recordOK, secret, "10.1.2.3:5000", http.StatusForbidden},
		{"record through a proxy", record, http.MethodGet, recordOK, with(secret, "X-Forwarded-For", "127.0.0.1"), "", http.StatusBadRequest},
		{"record with Forwarded", record, http.MethodGet, recordOK, with(secret, "Forwarded", "for=127.0.0.1"), "", http.StatusBadRequest},
		{"record with Via", record, http.MethodGet, recordOK, with(secret, "Via", "1.1 proxy"), "", http.StatusBadRequest},
		{"record with X-Real-IP", record, http.MethodGet, recordOK, with(secret, "X-Real-IP", "127.0.0.1"), "", http.StatusBadRequest},
		{"record with X-Forwarded-Host", record, http.MethodGet, recordOK, with(secret, "X-Forwarded-Host", "localhost"), "", http.StatusBadRequest},
		{"record with X-Forwarded-Proto", record, http.MethodGet, recordOK, with(secret, "X-Forwarded-Proto", "https"), "", http.StatusBadRequest},
		{"record from a web page (Origin)", record, http.MethodGet, recordOK, with(secret, "Origin", "https://evil.example"), "", http.StatusForbidden},
		{"record from a web page (Sec-Fetch-Site)", record, http.MethodGet, recordOK, with(secret, "Sec-Fetch-Site", "cross-site"), "", http.StatusForbidden},
		{"record with a DNS-rebound Host", record, http.MethodGet, recordOK, with(secret, "Host", "evil.example:8080"), "", http.StatusForbidden},
		{"record by DELETE", record, http.MethodDelete, recordOK, secret, "", http.StatusMethodNotAllowed},
		{"app_service without secret", appService, http.MethodGet, asOK, nil, "", http.StatusUnauthorized},
		{"app_service with a wrong secret", appService, http.MethodGet, asOK, with(secret, "X-IDENTITY-HEADER", "x"), "", http.StatusForbidden},
		{"app_service for an unknown resource", appService, http.MethodGet, "/msi/token?api-version=2019-08-01&resource=https://vault.azure.net", secret, "", http.StatusBadRequest},
		{"app_service for an application not allowed", appService, http.MethodGet, "/msi/token?api-version=2019-08-01&resource=https://graph.microsoft.com", secret, "", http.StatusBadRequest},
		{"app_service for another client_id", appService, http.MethodGet, asOK + "&client_id=" + otherUUID, secret, "", http.StatusBadRequest},
		{"app_service for a resource ID (a client secret has none)", appService, http.MethodGet, asOK + "&mi_res_id=/subscriptions/x", secret, "", http.StatusBadRequest},
		{"app_service with two identities", appService, http.MethodGet, asOK + "&client_id=" + apptest.ClientID + "&mi_res_id=/subscriptions/x", secret, "", http.StatusBadRequest},
		{"app_service with another api-version", appService, http.MethodGet, "/msi/token?api-version=2017-09-01&resource=api://orders", secret, "", http.StatusBadRequest},
		{"app_service from a remote peer", appService, http.MethodGet, asOK, secret, "[2001:db8::1]:5000", http.StatusForbidden},
		{"app_service with Via", appService, http.MethodGet, asOK, with(secret, "Via", "HTTP/1.1 gw"), "", http.StatusBadRequest},
		{"app_service with X-Real-IP", appService, http.MethodGet, asOK, with(secret, "X-Real-Ip", "10.0.0.1"), "", http.StatusBadRequest},
		{"app_service from a web page", appService, http.MethodGet, asOK, with(secret, "Origin", "null"), "", http.StatusForbidden},
		{"app_service through a proxy", appService, http.MethodGet, asOK, with(secret, "X-Forwarded-For", "10.0.0.1"), "", http.StatusBadRequest},
		{"imds without Metadata", imds, http.MethodGet, imdsOK, nil, "", http.StatusBadRequest},
		{"imds with Metadata: false", imds, http.MethodGet, imdsOK, map[string]string{"Metadata": "false"}, "", http.StatusBadRequest},
		{"imds with Via", imds, http.MethodGet, imdsOK, with(metadata, "Via", "1.0 fred"), "", http.StatusBadRequest},
		{"imds with X-Real-IP", imds, http.MethodGet, imdsOK, with(metadata, "X-Real-IP", "127.0.0.1"), "", http.StatusBadRequest},
		{"imds with True-Client-IP", imds, http.MethodGet, imdsOK, with(metadata, "True-Client-IP", "127.0.0.1"), "", http.StatusBadRequest},
		{"record with CF-Connecting-IP", record, http.MethodGet, recordOK, with(secret, "CF-Connecting-IP", "127.0.0.1"), "", http.StatusBadRequest},
		{"app_service with X-Client-IP", appService, http.MethodGet, asOK, with(secret, "X-Client-IP", "10.0.0.1"), "", http.StatusBadRequest},
		{"imds with X-Cluster-Client-IP", imds, http.MethodGet, imdsOK, with(metadata, "X-Cluster-Client-IP", "127.0.0.1"), "", http.StatusBadRequest},
		{"record with X-Original-Forwarded-For", record, http.MethodGet, recordOK, with(secret, "X-Original-Forwarded-For", "127.0.0.1"), "", http.StatusBadRequest},
		{"imds with X-Forwarded-Port", imds, http.MethodGet, imdsOK, with(metadata, "X-Forwarded-Port", "80"), "", http.StatusBadRequest},
		{"imds from a web page", imds, http.MethodGet, imdsOK, with(metadata, "Sec-Fetch-Site", "same-site"), "", http.StatusForbidden},
		{"imds through a proxy", imds, http.MethodGet, imdsOK, with(metadata, "X-Forwarded-For", "127.0.0.1"), "", http.StatusBadRequest},
		{"imds from a remote peer", imds, http.MethodGet, imdsOK, metadata, "192.168.1.20:5000", http.StatusForbidden},
		{"imds for an unknown resource", imds, http.MethodGet, "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://storage.azure.com", metadata, "", http.StatusBadRequest},
		{"imds for another client_id", imds, http.MethodGet, imdsOK + "&client_id=" + otherUUID, metadata, "", http.StatusBadRequest},
		{"imds for an empty client_id", imds, http.MethodGet, imdsOK + "&client_id=", metadata, "", http.StatusBadRequest},
		{"imds without api-version", imds, http.MethodGet, "/metadata/identity/oauth2/token?resource=api://orders", metadata, "", http.StatusBadRequest},
		{"imds without resource", imds, http.MethodGet, "/metadata/identity/oauth2/token?api-version=2018-02-01", metadata, "", http.StatusBadRequest},
		{"imds by POST", imds, http.MethodPost, imdsOK, metadata, "", http.StatusMethodNotAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := endpointRequest(tc.method, tc.target, tc.header)
			if host, ok := tc.header["Host"]; ok {
				req.Host = host
			}
			if tc.remoteAddr != "" {
				req.RemoteAddr = tc.remoteAddr
			}
			rec, body := call(t, tc.endpoint, req)
			if rec.Code != tc.status {
				t.Errorf("status %d, want %d: %v", rec.Code, tc.status, body)
			}
			wantAllow := map[string]string{ProtocolRecord: "GET, POST"}[tc.endpoint.Protocol]
			if wantAllow == "" {
				wantAllow = http.MethodGet
			}
			if got := rec.Header().Get("Allow"); tc.status == http.StatusMethodNotAllowed && got != wantAllow {
				t.Errorf("Allow %q, want %q", got, wantAllow)
			}
			var want []string
			switch tc.endpoint.Protocol {
			case ProtocolRecord:
				want = []string{"code", "message"}
			case ProtocolAppService:
				want = []string{"correlationId", "message", "statusCode"}
			default:
				want = []string{"error", "error_description"}
			}
			if got := keys(body); !slices.Equal(got, want) {
				t.Errorf("error fields %v, want %v", got, want)
			}
			if strings.Contains(rec.Body.String(), "eyJ") {
				t.Error("a refusal holds a token")
			}
		})
	}
	if got := emulator.TokenRequests(); got != 0 {
		t.Errorf("token requests = %d, want none for refused requests", got)
	}
}

// TestEndpointObjectIDOnlyTheTokenTells: a service principal's object ID is
// not in the config; the token's oid decides, and a mismatch keeps it back.
func TestEndpointObjectIDOnlyTheTokenTells(t *testing.T) {
	app, emulator, _ := apptest.NewApp(t, apptest.ClientSecret)
	e, _ := newTestEndpoint(t, app, ProtocolAppService, nil)
	const target = "/msi/token?api-version=2019-08-01&resource=api://orders&principal_id="
	secret := map[string]string{"X-IDENTITY-HEADER": unitEndpointSecret}
	rec, body := call(t, e, endpointRequest(http.MethodGet, target+"33333333-0000-4000-8000-0000000000c2", secret))
	if rec.Code != http.StatusBadRequest || body["access_token"] != nil {
		t.Fatalf("another principal_id: %d %v", rec.Code, keys(body))
	}
	credential, err := app.Token(t.Context(), "orders-api")
	if err != nil {
		t.Fatal(err)
	}
	claims, err := emulator.Verify(credential.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	rec, body = call(t, e, endpointRequest(http.MethodGet, target+claims.ObjectID, secret))
	if rec.Code != http.StatusOK || body["access_token"] != credential.AccessToken {
		t.Fatalf("the token's own principal_id: %d %v", rec.Code, keys(body))
	}
}

func TestEndpointPeerChecks(t *testing.T) {
	for _, tc := range []struct {
		remoteAddr, host string
		allowRemote      bool
		want             bool
	}{
		{"127.0.0.1:1", "127.0.0.1:8080", false, true},
		{"[::1]:1", "[::1]:8080", false, true},
		{"[::ffff:127.0.0.1]:1", "localhost:8080", false, true},
		{"127.0.0.2:1", "app.localhost", false, true},
		{"10.0.0.1:1", "127.0.0.1:8080", false, false},
		{"127.0.0.1:1", "169.254.169.254", false, true},
		{"127.0.0.1:1", "rebind.attacker.example", false, false},
		{"10.0.0.1:1", "sidecar.ns.svc", true, true},
	} {
		e := &TokenEndpoint{AllowRemote: tc.allowRemote, app: &entraapp.App{}}
		req := httptest.NewRequest(http.MethodGet, "http://x/", nil)
		req.RemoteAddr, req.Host = tc.remoteAddr, tc.host
		if got := e.checkPeer(req) == nil; got != tc.want {
			t.Errorf("peer %s host %s allow_remote %v: answered %v, want %v", tc.remoteAddr, tc.host, tc.allowRemote, got, tc.want)
		}
	}
}

func TestEndpointTokenFailureShapes(t *testing.T) {
	app, _, _ := apptest.NewApp(t, "wrong-"+apptest.ClientSecret)
	record, _ := newTestEndpoint(t, app, ProtocolRecord, nil)
	imds, _ := newTestEndpoint(t, app, ProtocolIMDS, nil)
	appService, _ := newTestEndpoint(t, app, ProtocolAppService, nil)
	rec, body := call(t, record, endpointRequest(http.MethodGet, "/token?applicationName=orders-api", map[string]string{"X-IDENTITY-HEADER": unitEndpointSecret}))
	if rec.Code != http.StatusBadGateway || body["code"] != "MICROSOFT_TOKEN_REQUEST_FAILED" || !strings.Contains(body["message"].(string), "AADSTS7000215") {
		t.Errorf("record: %d %v", rec.Code, body)
	}
	rec, body = call(t, imds, endpointRequest(http.MethodGet, "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=api://orders", map[string]string{"Metadata": "true"}))
	if rec.Code != http.StatusBadGateway || body["error"] == "" || !strings.Contains(body["error_description"].(string), "MICROSOFT_TOKEN_REQUEST_FAILED") {
		t.Errorf("imds: %d %v", rec.Code, body)
	}
	rec, body = call(t, appService, endpointRequest(http.MethodGet, "/msi/token?api-version=2019-08-01&resource=api://orders", map[string]string{"X-IDENTITY-HEADER": unitEndpointSecret}))
	if rec.Code != http.StatusBadGateway || body["statusCode"] != float64(http.StatusBadGateway) {
		t.Errorf("app_service: %d %v", rec.Code, body)
	}
	if strings.Contains(rec.Body.String(), apptest.ClientSecret) {
		t.Error("an error holds the client secret")
	}
}

func TestEndpointThrottledAnswers503WithRetryAfter(t *testing.T) {
	app, emulator, _ := apptest.NewApp(t, apptest.ClientSecret)
	emulator.FailNext(-1, entratest.Failure{Status: http.StatusTooManyRequests, RetryAfter: "30"})
	imds, _ := newTestEndpoint(t, app, ProtocolIMDS, nil)
	rec, body := call(t, imds, endpointRequest(http.MethodGet, "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=api://orders", map[string]string{"Metadata": "true"}))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Errorf("status %d Retry-After %q: %v", rec.Code, rec.Header().Get("Retry-After"), body)
	}
}

func TestEndpointConfigRejectedAtLoad(t *testing.T) {
	t.Setenv("ENDPOINT_UNIT_SECRET", unitEndpointSecret)
	t.Setenv("ENDPOINT_EMPTY", "")
	app, _, _ := apptest.NewApp(t, apptest.ClientSecret)
	app.Applications["graph-beta"] = &entraapp.Application{Scopes: []string{"https://graph.microsoft.com//.default"}}
	app.Applications["graph-other"] = &entraapp.Application{Scopes: []string{"https://graph.microsoft.com/.default"}}
	if err := app.Cleanup(); err != nil { // provisioned again with the applications added
		t.Fatal(err)
	}
	if err := app.ProvisionForTest(apptest.Logger(app)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		e    TokenEndpoint
		want string // in the error; "" for none
	}{
		{"record without secret", TokenEndpoint{Protocol: ProtocolRecord}, "MICROSOFT_PROVIDER_INVALID_CONFIG: entra_token_endpoint secret"},
		{"app_service without secret", TokenEndpoint{Protocol: ProtocolAppService}, "MICROSOFT_PROVIDER_INVALID_CONFIG: entra_token_endpoint secret"},
		{"secret from an empty variable", TokenEndpoint{Protocol: ProtocolRecord, Secret: "{env.ENDPOINT_EMPTY}"}, "entra_token_endpoint secret: is required ({env.ENDPOINT_EMPTY} resolved"},
		{"short secret", TokenEndpoint{Protocol: ProtocolRecord, Secret: "short"}, "at least 16"},
		{"secret from the environment", TokenEndpoint{Protocol: ProtocolRecord, Secret: "{env.ENDPOINT_UNIT_SECRET}"}, ""},
		{"imds with a secret", TokenEndpoint{Protocol: ProtocolIMDS, Secret: unitEndpointSecret}, "entra_token_endpoint secret: is refused for imds"},
		{"imds with allow_remote", TokenEndpoint{Protocol: ProtocolIMDS, AllowRemote: true}, "allow_remote"},
		{"unknown protocol", TokenEndpoint{Protocol: "msi"}, "entra_token_endpoint protocol"},
		{"unknown application", TokenEndpoint{Protocol: ProtocolRecord, Secret: unitEndpointSecret, Applications: []string{"nope"}}, "MICROSOFT_APPLICATION_NOT_FOUND"},
		{"resource for record", TokenEndpoint{Protocol: ProtocolRecord, Secret: unitEndpointSecret, Resources: map[string]string{"api://orders": "orders-api"}}, "applies to app_service and imds"},
		{"two applications with the same scope", TokenEndpoint{Protocol: ProtocolIMDS}, "graph-api, graph-beta, graph-other all have the only scope https://graph.microsoft.com/.default"},
		{"same scope, one allowed", TokenEndpoint{Protocol: ProtocolIMDS, Applications: []string{"graph-api", "orders-api"}}, ""},
		{"same scope, mapped", TokenEndpoint{Protocol: ProtocolIMDS, Resources: map[string]string{"https://graph.microsoft.com/": "graph-other"}}, ""},
		{"mapped to an application not allowed", TokenEndpoint{Protocol: ProtocolIMDS, Applications: []string{"orders-api"}, Resources: map[string]string{"https://graph.microsoft.com": "graph-api"}}, "not among this endpoint's applications"},
		{"mapped to an unknown application", TokenEndpoint{Protocol: ProtocolIMDS, Resources: map[string]string{"https://graph.microsoft.com": "nope"}}, "MICROSOFT_APPLICATION_NOT_FOUND"},
		{"mapped twice", TokenEndpoint{Protocol: ProtocolIMDS, Resources: map[string]string{"https://graph.microsoft.com": "graph-api", "https://graph.microsoft.com/": "graph-api"}}, "mapped twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := tc.e
			err := e.provision(app)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("rejected: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			case err != nil && strings.Contains(err.Error(), unitEndpointSecret):
				t.Fatal("the error holds the secret")
			}
		})
	}
}

func TestEndpointMappedResource(t *testing.T) {
	app, emulator, _ := apptest.NewApp(t, apptest.ClientSecret)
	app.Applications["graph-other"] = &entraapp.Application{Scopes: []string{"https://graph.microsoft.com/.default"}}
	e, _ := newTestEndpoint(t, app, ProtocolIMDS, func(e *TokenEndpoint) {
		e.Resources = map[string]string{"https://graph.microsoft.com": "graph-api"}
	})
	_, body := call(t, e, endpointRequest(http.MethodGet, "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://graph.microsoft.com/",
		map[string]string{"Metadata": "true"}))
	want, err := app.Token(t.Context(), "graph-api")
	if err != nil {
		t.Fatal(err)
	}
	if body["access_token"] != want.AccessToken {
		t.Error("the mapped resource did not get the mapped application's token")
	}
	if got := emulator.TokenRequests(); got != 1 {
		t.Errorf("token requests = %d, want 1", got)
	}
}

func TestEndpointWithoutEntraAppIsRejectedAtLoad(t *testing.T) {
	config := `{"admin": {"disabled": true}, "apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:0"], "routes": [{"handle": [
		{"handler": "entra_token_endpoint", "protocol": "imds"}]}]}}}}}`
	err := apptest.ValidateConfig(t, config)
	if err == nil || !strings.Contains(err.Error(), "MICROSOFT_PROVIDER_NOT_CONFIGURED") {
		t.Fatalf("error = %v, want MICROSOFT_PROVIDER_NOT_CONFIGURED", err)
	}
}

// failingWriter is a client whose connection broke: every write fails.
type failingWriter struct{ *httptest.ResponseRecorder }

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("connection reset by peer") }

// Caddy's error log records the request's headers, X-IDENTITY-HEADER
// among them: the endpoint hands it no error, neither for a client that
// left nor for a write that failed.
func TestEndpointHandsCaddyNoErrorThatWouldLogItsSecret(t *testing.T) {
	app, _, _ := apptest.NewApp(t, apptest.ClientSecret)
	record, _ := newTestEndpoint(t, app, ProtocolRecord, nil)
	header := map[string]string{"X-IDENTITY-HEADER": unitEndpointSecret}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	left := endpointRequest(http.MethodGet, "/token?applicationName=orders-api", header).WithContext(ctx)
	rec := httptest.NewRecorder()
	if err := record.ServeHTTP(rec, left, nil); err != nil {
		t.Errorf("a client that left: ServeHTTP = %v, want nil", err)
	}
	if rec.Code != 499 || rec.Body.Len() != 0 {
		t.Errorf("a client that left: %d %q, want 499 and no body", rec.Code, rec.Body.String())
	}

	for _, target := range []string{"/token?applicationName=orders-api", "/token?applicationName=unknown"} {
		req := endpointRequest(http.MethodGet, target, header)
		if err := record.ServeHTTP(failingWriter{httptest.NewRecorder()}, req, nil); err != nil {
			t.Errorf("%s with a broken connection: ServeHTTP = %v, want nil", target, err)
		}
	}
}
