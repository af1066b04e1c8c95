package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/entra/entratest"
	"github.com/caddy-entra/caddy-entra/tokencache"
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
		IdentityConfig: IdentityConfig{
			AuthorityHost: server.URL,
			TenantID:      emulator.TenantID(),
			ClientID:      unitClientID,
			ClientSecret:  secret,
		},
		Applications: map[string]*Application{
			"graph-api":  {Scopes: []string{"https://graph.microsoft.com/.default"}},
			"orders-api": {Scopes: []string{"api://orders/.default"}},
		},
		// The tests call the sidecar by a service name, as in Docker Compose.
		Hosts:  []string{"sidecar"},
		logger: zap.New(core),
	}
	if err := app.provision(caddy.NewReplacer()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = app.Cleanup() })
	return app, emulator, logs
}

// serve runs one request through a handler for application and reports the
// Authorization values next received (nil when next was not called).
func serve(t *testing.T, app *App, application string, req *http.Request) (*httptest.ResponseRecorder, []string, bool) {
	t.Helper()
	h := &Handler{Application: application, app: app, logger: app.logger, header: DefaultHeader}
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
	app, _, _ := newTestApp(t, unitClientSecret)
	h := &Handler{Application: "graph-api", Header: "x-api-token", app: app, logger: app.logger}
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
	app, emulator, logs := newTestApp(t, unitClientSecret)
	h := &Handler{Application: "graph-api", app: app, logger: app.logger,
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
	app, emulator, _ := newTestApp(t, unitClientSecret)
	h := &Handler{Application: "graph-api", app: app, logger: app.logger, header: DefaultHeader}
	for range 3 {
		serveWith(t, h, http.StatusUnauthorized, httptest.NewRequest(http.MethodGet, "http://sidecar/", nil))
	}
	if got := emulator.TokenRequests(); got != 1 {
		t.Errorf("token requests = %d, want 1 with purging disabled", got)
	}
}

func TestHandlerThrottledAnswers503WithRetryAfter(t *testing.T) {
	app, emulator, _ := newTestApp(t, unitClientSecret)
	emulator.FailNext(-1, entratest.Failure{Status: http.StatusTooManyRequests, Error: "temporarily_unavailable", RetryAfter: "20"})
	h := &Handler{Application: "graph-api", app: app, logger: app.logger, header: DefaultHeader}
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

// TestReloadNeverChangesTheRunningConfig provisions a second config on the
// same pooled cache, as a reload does, and checks that it cannot change the
// running config (even when the new one is then thrown away), while a
// successful reload keeps the cached token.
func TestReloadNeverChangesTheRunningConfig(t *testing.T) {
	running, emulatorA, _ := newTestApp(t, unitClientSecret)
	first, err := running.Token(context.Background(), "graph-api")
	if err != nil {
		t.Fatal(err)
	}

	// A new config moves graph-api to another identity, then fails to load
	// for an unrelated reason: Caddy cleans it up and keeps the old one.
	failed, emulatorB, _ := newTestApp(t, unitClientSecret)
	if failed.cache != running.cache {
		t.Fatal("configs with the same cache settings must share the pooled cache")
	}
	if _, err := failed.Token(context.Background(), "graph-api"); err != nil {
		t.Fatal(err)
	}
	if err := failed.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if !running.purgeRejected(context.Background(), "graph-api", first.AccessToken) {
		t.Fatal("purge of the current token did nothing")
	}
	if _, err := running.Token(context.Background(), "graph-api"); err != nil {
		t.Fatal(err)
	}
	if a, b := emulatorA.TokenRequests(), emulatorB.TokenRequests(); a != 2 || b != 1 {
		t.Errorf("token requests A=%d B=%d; want A=2, B=1: the running config must keep its own identity", a, b)
	}

	// A successful reload with the same identity keeps the token: no request.
	reloaded := &App{IdentityConfig: running.IdentityConfig, Applications: running.Applications, logger: running.logger}
	if err := reloaded.provision(caddy.NewReplacer()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reloaded.Cleanup() })
	before := emulatorA.TokenRequests()
	if err := running.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if _, err := reloaded.Token(context.Background(), "graph-api"); err != nil {
		t.Fatal(err)
	}
	if got := emulatorA.TokenRequests() - before; got != 0 {
		t.Errorf("a reload made %d token requests, want 0", got)
	}
}

// TestARequestRacingReleaseGetsATokenOrARetryableError: Caddy cleans an
// old config up while its last requests run. Whatever the interleaving of
// those requests with the release of the config's handles, each gets a
// token or a retryable 503, never a 404 (MICROSOFT_APPLICATION_NOT_FOUND)
// or a panic.
func TestARequestRacingReleaseGetsATokenOrARetryableError(t *testing.T) {
	first, _, _ := newTestApp(t, unitClientSecret)
	var wrong atomic.Value
	for round := range 20 {
		app := first
		if round > 0 { // a reload; the previous config's cache is closed, so a new one
			app = &App{IdentityConfig: first.IdentityConfig, Applications: first.Applications, logger: first.logger}
			if err := app.provision(caddy.NewReplacer()); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := app.Token(context.Background(), "graph-api"); err != nil {
			t.Fatal(err)
		}
		var calls atomic.Int64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					_, err := app.Token(context.Background(), "graph-api")
					// Bursts and pauses, so that no request in flight
					// alternates with a new one arriving.
					time.Sleep(time.Duration(calls.Add(1)%20) * time.Microsecond)
					var te *tokencache.Error
					if err != nil && (!errors.As(err, &te) || te.Status != http.StatusServiceUnavailable || te.RetryAfter <= 0) {
						wrong.CompareAndSwap(nil, err)
					}
				}
			})
		}
		for calls.Load() < 100 {
			runtime.Gosched()
		}
		if err := app.Cleanup(); err != nil {
			t.Fatal(err)
		}
		for after := calls.Load(); calls.Load() < after+2000; {
			runtime.Gosched()
		}
		close(stop)
		wg.Wait()
		if err := wrong.Load(); err != nil {
			t.Fatalf("round %d: a request racing the release got %v; want a token or a retryable 503", round, err)
		}
	}
}

// TestARequestWhoseCacheClosesGetsARetryableError: a reload that changes
// the cache settings moves to another pooled cache, and the old one closes
// when the old config is cleaned up, under a request of the old config
// waiting for a token: that request gets a retryable 503.
func TestARequestWhoseCacheClosesGetsARetryableError(t *testing.T) {
	old, emulator, _ := newTestApp(t, unitClientSecret)
	emulator.SetResponseDelay(time.Minute) // hold the token request
	result := make(chan error, 1)
	go func() {
		_, err := old.Token(context.Background(), "graph-api")
		result <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for emulator.TokenRequests() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the token request never reached the emulator")
		}
		time.Sleep(time.Millisecond) // the emulator offers no hook
	}
	reloaded := &App{IdentityConfig: old.IdentityConfig, Applications: old.Applications,
		RefreshWindow: caddy.Duration(2 * time.Minute), logger: old.logger}
	if err := reloaded.provision(caddy.NewReplacer()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reloaded.Cleanup() })
	if reloaded.cache == old.cache {
		t.Fatal("other cache settings must make another pooled cache")
	}
	if err := old.Cleanup(); err != nil {
		t.Fatal(err)
	}
	err := <-result
	var te *tokencache.Error
	if !errors.As(err, &te) || te.Status != http.StatusServiceUnavailable || te.RetryAfter <= 0 {
		t.Fatalf("request on the closed cache: %v, want a retryable 503", err)
	}
}
