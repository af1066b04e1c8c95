package entratoken

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-entra/caddy-entra/caddymodule/entraapp"
	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/entra/entratest"
	"github.com/caddy-entra/caddy-entra/internal/apptest"
	"github.com/caddy-entra/caddy-entra/tokencache"
)

// serve runs one request through a handler for application and reports the
// Authorization values next received (nil when next was not called).
func serve(t *testing.T, app *entraapp.App, application string, req *http.Request) (*httptest.ResponseRecorder, []string, bool) {
	t.Helper()
	h := &Handler{Application: application, app: app, logger: apptest.Logger(app), header: DefaultHeader}
	var seen []string
	called := false
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		called = true
		seen = r.Header.Values("Authorization")
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
	repl := caddy.NewReplacer()
	req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, repl))
	rec := httptest.NewRecorder()
	if err := h.ServeHTTP(rec, req, next); err != nil {
		t.Fatalf("ServeHTTP: %v", err)
	}
	if called {
		if got, _ := repl.GetString("http.entra_token.application"); got != application {
			t.Errorf("placeholder application = %q, want %q", got, application)
		}
	}
	return rec, seen, called
}

func TestHandlerReplacesEveryClientAuthorization(t *testing.T) {
	app, emulator, logs := apptest.NewApp(t, apptest.ClientSecret)
	req := httptest.NewRequest(http.MethodGet, "http://sidecar/v1.0/me", nil)
	req.Header.Add("Authorization", "Basic Zm9vOmJhcg==")
	req.Header.Add("Authorization", "Bearer forged")

	rec, seen, called := serve(t, app, "graph-api", req)
	if !called || rec.Code != http.StatusNoContent {
		t.Fatalf("next called %v, status %d", called, rec.Code)
	}
	if len(seen) != 1 || !strings.HasPrefix(seen[0], "Bearer ") {
		t.Fatalf("next saw %d Authorization values, want one bearer token", len(seen))
	}
	claims, err := emulator.Verify(strings.TrimPrefix(seen[0], "Bearer "))
	if err != nil {
		t.Fatalf("injected token does not verify: %v", err)
	}
	if claims.Audience != "https://graph.microsoft.com" {
		t.Errorf("aud = %q, want the graph-api resource", claims.Audience)
	}
	for _, entry := range logs.All() {
		line, _ := json.Marshal(entry.ContextMap())
		if strings.Contains(string(line)+entry.Message, strings.TrimPrefix(seen[0], "Bearer ")) {
			t.Errorf("log %q holds the token", entry.Message)
		}
	}
}

func TestHandlerCachesPerApplication(t *testing.T) {
	app, emulator, _ := apptest.NewApp(t, apptest.ClientSecret)
	tokens := map[string]string{}
	for range 3 {
		for _, name := range []string{"graph-api", "orders-api"} {
			_, seen, _ := serve(t, app, name, httptest.NewRequest(http.MethodGet, "http://sidecar/", nil))
			if prev, ok := tokens[name]; ok && prev != seen[0] {
				t.Errorf("%s got a new token on a cache hit", name)
			}
			tokens[name] = seen[0]
		}
	}
	if tokens["graph-api"] == tokens["orders-api"] {
		t.Error("two applications with different scopes share one token")
	}
	if got := emulator.TokenRequests(); got != 2 {
		t.Errorf("token requests = %d, want 2 (one per application)", got)
	}
}

func TestHandlerAnswers502WithoutCallingNext(t *testing.T) {
	app, _, logs := apptest.NewApp(t, "wrong-"+apptest.ClientSecret)
	rec, _, called := serve(t, app, "graph-api", httptest.NewRequest(http.MethodGet, "http://sidecar/", nil))
	if called {
		t.Fatal("next was called without a token")
	}
	if rec.Code != http.StatusBadGateway {
		t.Fatalf("status = %d, want 502", rec.Code)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	var body entraapp.ErrorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	if body.Code != "MICROSOFT_TOKEN_REQUEST_FAILED" {
		t.Errorf("code = %q", body.Code)
	}
	for _, want := range []string{"invalid_client", "AADSTS7000215", "trace_id"} {
		if !strings.Contains(body.Message, want) {
			t.Errorf("message %q lacks %q", body.Message, want)
		}
	}
	if strings.Contains(rec.Body.String(), apptest.ClientSecret) {
		t.Error("the response holds the secret")
	}
	failures := logs.FilterMessage("token request failed").All()
	if len(failures) != 1 {
		t.Fatalf("%d 'token request failed' logs, want 1", len(failures))
	}
	fields := failures[0].ContextMap()
	if fields["application"] != "graph-api" || fields["trace_id"] == "" || fields["aadsts"] == nil {
		t.Errorf("failure log lacks application, trace_id or aadsts: %v", fields)
	}
	for _, entry := range logs.All() {
		line, _ := json.Marshal(entry.ContextMap())
		if strings.Contains(string(line)+entry.Message, apptest.ClientSecret) {
			t.Errorf("log %q holds the secret", entry.Message)
		}
	}
}

// Ensure the error type the handler relies on is the client's.
var _ error = (*entra.RequestError)(nil)

// serveWith runs one request through h with next answering nextStatus, and
// returns the recorder and what next saw of header.
func serveWith(t *testing.T, h *Handler, nextStatus int, req *http.Request) (*httptest.ResponseRecorder, []string) {
	t.Helper()
	var seen []string
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		seen = r.Header.Values(h.header)
		w.WriteHeader(nextStatus)
		return nil
	})
	rec := httptest.NewRecorder()
	if err := h.ServeHTTP(rec, req, next); err != nil {
		t.Fatalf("ServeHTTP: %v", err)
	}
	return rec, seen
}

func TestHandlerHeaderOption(t *testing.T) {
	app, _, _ := apptest.NewApp(t, apptest.ClientSecret)
	h := &Handler{Application: "graph-api", Header: "x-api-token", app: app, logger: apptest.Logger(app)}
	h.header = http.CanonicalHeaderKey(h.Header)
	req := httptest.NewRequest(http.MethodGet, "http://sidecar/", nil)
	req.Header.Add("X-Api-Token", "forged")
	req.Header.Add("X-API-TOKEN", "forged again")
	req.Header.Set("Authorization", "Basic dXNlcjpwYXNz")
	_, seen := serveWith(t, h, http.StatusOK, req)
	if len(seen) != 1 || !strings.HasPrefix(seen[0], "Bearer ") {
		t.Fatalf("X-Api-Token = %d values, want one bearer token", len(seen))
	}
	if got := req.Header.Get("Authorization"); got != "Basic dXNlcjpwYXNz" {
		t.Errorf("Authorization = %q, want the client's own untouched", got)
	}
}

func TestHandlerPurgesOnDownstream401Once(t *testing.T) {
	app, emulator, logs := apptest.NewApp(t, apptest.ClientSecret)
	h := &Handler{Application: "graph-api", app: app, logger: apptest.Logger(app),
		header: DefaultHeader, purgeOnStatus: defaultPurgeOnStatus}
	newReq := func() *http.Request { return httptest.NewRequest(http.MethodGet, "http://sidecar/", nil) }

	_, first := serveWith(t, h, http.StatusUnauthorized, newReq())
	_, second := serveWith(t, h, http.StatusUnauthorized, newReq())
	if first[0] == second[0] {
		t.Fatal("after a downstream 401 the same token was injected again")
	}
	if got := emulator.TokenRequests(); got != 2 {
		t.Errorf("token requests = %d, want 2", got)
	}
	// The second 401 comes within the purge interval: no third token.
	_, third := serveWith(t, h, http.StatusOK, newReq())
	if third[0] != second[0] {
		t.Error("a purge within the rate limit fetched another token")
	}
	if n := len(logs.FilterMessage("downstream refused the token; purged it so the next request gets a fresh one").All()); n != 1 {
		t.Errorf("%d purge logs, want 1", n)
	}
}

func TestHandlerEmptyPurgeListDisablesPurging(t *testing.T) {
	app, emulator, _ := apptest.NewApp(t, apptest.ClientSecret)
	h := &Handler{Application: "graph-api", app: app, logger: apptest.Logger(app), header: DefaultHeader}
	for range 3 {
		serveWith(t, h, http.StatusUnauthorized, httptest.NewRequest(http.MethodGet, "http://sidecar/", nil))
	}
	if got := emulator.TokenRequests(); got != 1 {
		t.Errorf("token requests = %d, want 1 with purging disabled", got)
	}
}

func TestHandlerThrottledAnswers503WithRetryAfter(t *testing.T) {
	app, emulator, _ := apptest.NewApp(t, apptest.ClientSecret)
	emulator.FailNext(-1, entratest.Failure{Status: http.StatusTooManyRequests, Error: "temporarily_unavailable", RetryAfter: "20"})
	h := &Handler{Application: "graph-api", app: app, logger: apptest.Logger(app), header: DefaultHeader}
	rec, _ := serveWith(t, h, http.StatusOK, httptest.NewRequest(http.MethodGet, "http://sidecar/", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("status = %d, want 503", rec.Code)
	}
	if got := rec.Header().Get("Retry-After"); got != "20" && got != "19" {
		t.Errorf("Retry-After = %q, want 20", got)
	}
	rec, _ = serveWith(t, h, http.StatusOK, httptest.NewRequest(http.MethodGet, "http://sidecar/", nil))
	if rec.Code != http.StatusServiceUnavailable || emulator.TokenRequests() != 1 {
		t.Errorf("second request: status %d, token requests %d; want 503 and still 1", rec.Code, emulator.TokenRequests())
	}
}

// A client or a downstream causes these warnings at its request rate: the
// log gets one a minute each, with the number not logged since; the
// metrics count them all.
func TestHandlerWarnsOnceAMinuteOfWhatClientsAndDownstreamsCause(t *testing.T) {
	t.Run("no token injected", func(t *testing.T) {
		app, _, logs := apptest.NewApp(t, "wrong-"+apptest.ClientSecret)
		h := &Handler{Application: "graph-api", app: app, logger: apptest.Logger(app), header: DefaultHeader,
			noTokenWarnings: new(sync.Map)}
		for range 20 {
			if rec, _ := serveWith(t, h, http.StatusNoContent, httptest.NewRequest(http.MethodGet, "http://sidecar/", nil)); rec.Code < 500 {
				t.Fatalf("status %d, want a token failure", rec.Code)
			}
		}
		if n := logs.FilterMessage("no token injected").FilterLevelExact(zapcore.WarnLevel).Len(); n != 1 {
			t.Errorf("20 token failures logged %d warnings, want 1", n)
		}
		// 503s a flood of clients causes (exchanges busy) hide no 502.
		busy := &tokencache.Error{RetryAfter: time.Second, Err: tokencache.ErrExchangesBusy, Message: "busy"}
		_ = h.writeError(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "http://sidecar/", nil), busy)
		_ = h.writeError(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "http://sidecar/", nil), errors.New("refused"))
		statuses := map[any]int{}
		for _, e := range logs.FilterMessage("no token injected").FilterLevelExact(zapcore.WarnLevel).All() {
			statuses[e.ContextMap()["status"]]++
		}
		if len(statuses) != 2 {
			t.Errorf("warnings by status after a 503 and a 502: %v, want one of each", statuses)
		}
	})
	t.Run("claims challenge without a satisfying token", func(t *testing.T) {
		emulator, server, err := entratest.NewServer(entratest.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(server.Close)
		emulator.AddClient(apptest.ClientID, apptest.ClientSecret)
		core, logs := observer.New(zapcore.DebugLevel)
		app := &entraapp.App{
			IdentityConfig: entraapp.IdentityConfig{AuthorityHost: server.URL, TenantID: emulator.TenantID(),
				ClientID: apptest.ClientID, ClientSecret: apptest.ClientSecret},
			ClientCapabilities: []string{"cp1"},
			Applications:       map[string]*entraapp.Application{"graph-api": {Scopes: []string{"https://graph.microsoft.com/.default"}}},
			Hosts:              []string{"sidecar"},
		}
		if err := app.ProvisionForTest(zap.New(core)); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = app.Cleanup() })
		h := &Handler{Application: "graph-api", app: app, logger: zap.New(core), header: DefaultHeader,
			purgeOnStatus: defaultPurgeOnStatus, answersClaims: true, claimsWarnings: new(entraapp.RefusalLog)}
		challenge := `Bearer error="insufficient_claims", claims="` +
			base64.StdEncoding.EncodeToString([]byte(`{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}`)) + `"`
		next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Set("WWW-Authenticate", challenge)
			w.WriteHeader(http.StatusUnauthorized)
			return nil
		})
		for range 20 {
			rec := httptest.NewRecorder()
			if err := h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://sidecar/v1.0/me", nil), next); err != nil || rec.Code != http.StatusUnauthorized {
				t.Fatalf("a challenged request: %d, %v", rec.Code, err)
			}
		}
		if n := logs.FilterMessage("downstream answered a claims challenge; no token satisfying it could be had").Len(); n != 1 {
			t.Errorf("20 challenges no token satisfied logged %d warnings, want 1", n)
		}
	})
}
