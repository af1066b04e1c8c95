package caddymodule

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/entra/entratest"
)

const (
	unitClientID     = "22222222-0000-4000-8000-0000000000c1"
	unitClientSecret = "unit-secret-never-logged-4b1d"
)

// newTestApp provisions an entra app against a fresh emulator without a
// caddy.Context, as Provision would, with logs observed.
func newTestApp(t *testing.T, secret string) (*App, *entratest.Emulator, *observer.ObservedLogs) {
	t.Helper()
	emulator, server, err := entratest.NewServer(entratest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(server.Close)
	emulator.AddClient(unitClientID, unitClientSecret)
	core, logs := observer.New(zapcore.DebugLevel)
	app := &App{
		AuthorityHost: server.URL,
		TenantID:      emulator.TenantID(),
		ClientID:      unitClientID,
		ClientSecret:  secret,
		Applications: map[string]*Application{
			"graph-api":  {Scopes: []string{"https://graph.microsoft.com/.default"}},
			"orders-api": {Scopes: []string{"api://orders/.default"}},
		},
		logger: zap.New(core),
	}
	resolved, err := app.resolve(caddy.NewReplacer())
	if err != nil {
		t.Fatal(err)
	}
	app.cache, err = buildCache(resolved, app.logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = app.Cleanup() })
	return app, emulator, logs
}

// serve runs one request through a handler for application and reports the
// Authorization values next received (nil when next was not called).
func serve(t *testing.T, app *App, application string, req *http.Request) (*httptest.ResponseRecorder, []string, bool) {
	t.Helper()
	h := &Handler{Application: application, app: app, logger: app.logger}
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
	app, emulator, logs := newTestApp(t, unitClientSecret)
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
	app, emulator, _ := newTestApp(t, unitClientSecret)
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
	app, _, logs := newTestApp(t, "wrong-"+unitClientSecret)
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
	var body errorBody
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
	if strings.Contains(rec.Body.String(), unitClientSecret) {
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
		if strings.Contains(string(line)+entry.Message, unitClientSecret) {
			t.Errorf("log %q holds the secret", entry.Message)
		}
	}
}

// Ensure the error type the handler relies on is the client's.
var _ error = (*entra.RequestError)(nil)
