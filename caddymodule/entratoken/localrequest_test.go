package entratoken

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-entra/caddy-entra/caddymodule/entraapp"
	"github.com/caddy-entra/caddy-entra/internal/apptest"
)

func TestHandlerRefusesWhatABrowserSends(t *testing.T) {
	app, emulator, _ := apptest.NewApp(t, apptest.ClientSecret)
	before := testutil.ToFloat64(requests.WithLabelValues("graph-api", entraapp.CodeRequestNotLocal))
	for name, browser := range apptest.BrowserRequests() {
		req := httptest.NewRequest(http.MethodGet, "http://sidecar/v1/me", nil)
		req.RemoteAddr = "127.0.0.1:40000"
		browser(req)
		rec, _, called := serve(t, app, "graph-api", req)
		if called {
			t.Errorf("%s: next was called", name)
		}
		apptest.AssertNotLocal(t, rec)
		if strings.Contains(name, "Host") && !strings.Contains(rec.Body.String(), "hosts option") {
			t.Errorf("%s: the message does not name the hosts option: %s", name, rec.Body.String())
		}
	}
	if got := emulator.TokenRequests(); got != 0 {
		t.Errorf("refused requests made %d token requests, want none", got)
	}
	after := testutil.ToFloat64(requests.WithLabelValues("graph-api", entraapp.CodeRequestNotLocal))
	if after-before != float64(len(apptest.BrowserRequests())) {
		t.Errorf("requests_total{result=%s} grew by %v, want %d", entraapp.CodeRequestNotLocal, after-before, len(apptest.BrowserRequests()))
	}
	for name, local := range apptest.LocalRequests() {
		req := httptest.NewRequest(http.MethodGet, "http://sidecar/v1/me", nil)
		local(req)
		rec, seen, called := serve(t, app, "graph-api", req)
		if !called || len(seen) != 1 || !strings.HasPrefix(seen[0], "Bearer ") {
			t.Errorf("%s: %d, next called %v", name, rec.Code, called)
		}
	}
}

// TestAPageCannotFloodTheLog: however many requests a web page sends,
// entra_token logs one warning per interval (and counts every refusal).
func TestAPageCannotFloodTheLog(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	app, _ := apptest.NewAppLogging(t, apptest.ClientSecret, zap.New(core))
	for range 20 {
		req := httptest.NewRequest(http.MethodGet, "http://sidecar/v1/me", nil)
		req.Header.Set("Origin", "https://evil.example")
		rec, _, called := serve(t, app, "graph-api", req)
		if called || rec.Code != http.StatusForbidden {
			t.Fatalf("a request with Origin: %d, next called %v", rec.Code, called)
		}
	}
	if n := logs.FilterMessage("refused a request that may come from a web page").Len(); n != 1 {
		t.Errorf("20 refusals logged %d warnings, want 1", n)
	}
}

// TRACE and a dot-segment are refused before any token, and counted.
func TestRefusedMethodsAndPathsAreCounted(t *testing.T) {
	app, emulator, _ := apptest.NewApp(t, apptest.ClientSecret)
	for _, tt := range []struct{ method, target, result string }{
		{"trace", "/v1/me", "method_refused"},
		{http.MethodGet, "/v1/%2e%2e/admin", "dot_segment"},
	} {
		before := testutil.ToFloat64(requests.WithLabelValues("graph-api", tt.result))
		req := httptest.NewRequest(tt.method, "http://sidecar"+tt.target, nil)
		req.RemoteAddr = "127.0.0.1:40000"
		if _, _, called := serve(t, app, "graph-api", req); called {
			t.Errorf("%s %s: next was called", tt.method, tt.target)
		}
		if after := testutil.ToFloat64(requests.WithLabelValues("graph-api", tt.result)); after-before != 1 {
			t.Errorf("%s %s: requests_total{result=%s} grew by %v, want 1", tt.method, tt.target, tt.result, after-before)
		}
	}
	if n := emulator.TokenRequests(); n != 0 {
		t.Errorf("%d token requests, want none", n)
	}
}

// With log_credentials on its server, Caddy's logs show the Authorization
// header: entra_token warns once, at its first request; without it, never.
func TestLogCredentialsIsWarnedOfOnce(t *testing.T) {
	for _, logCredentials := range []bool{true, false} {
		core, logs := observer.New(zapcore.WarnLevel)
		app, _ := apptest.NewAppLogging(t, apptest.ClientSecret, zap.New(core))
		h := &Handler{Application: "graph-api", app: app, logger: zap.New(core), header: DefaultHeader,
			serverChecked: new(atomic.Bool)}
		srv := &caddyhttp.Server{Logs: &caddyhttp.ServerLogConfig{ShouldLogCredentials: logCredentials}}
		next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error { return nil })
		for range 3 {
			req := httptest.NewRequest(http.MethodGet, "http://sidecar/v1/me", nil)
			req.RemoteAddr = "127.0.0.1:40000"
			req = req.WithContext(context.WithValue(req.Context(), caddyhttp.ServerCtxKey, srv))
			if err := h.ServeHTTP(httptest.NewRecorder(), req, next); err != nil {
				t.Fatal(err)
			}
		}
		want := 0
		if logCredentials {
			want = 1
		}
		if n := logs.FilterMessageSnippet("log_credentials is on").Len(); n != want {
			t.Errorf("log_credentials %v: %d warnings, want %d", logCredentials, n, want)
		}
	}
}
