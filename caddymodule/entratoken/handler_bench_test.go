package entratoken

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/internal/apptest"
)

// BenchmarkHandlerServeHTTP measures the handler on its hot path: a valid
// token in memory, injected into a request that next answers with 200.
func BenchmarkHandlerServeHTTP(b *testing.B) {
	app, _ := apptest.NewAppLogging(b, apptest.ClientSecret, zap.NewNop()) // production runs at info level: no debug lines
	h := &Handler{Application: "graph-api", app: app, logger: zap.NewNop(),
		header: DefaultHeader, purgeOnStatus: defaultPurgeOnStatus, injected: new(atomic.Pointer[injection])}
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.WriteHeader(http.StatusOK)
		return nil
	})
	req := httptest.NewRequest(http.MethodGet, "http://sidecar/", nil)
	req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
	w := httptest.NewRecorder()
	if err := h.ServeHTTP(w, req, next); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		req.Header.Set("Authorization", "Basic x")
		if err := h.ServeHTTP(w, req, next); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHandlerServeHTTPOnBehalfOf is BenchmarkHandlerServeHTTP for an
// on-behalf-of application on its warm path: the user's token already
// exchanged (the keyed hash of the token, then the bounded map; no local
// checks, which an entry's token has passed).
func BenchmarkHandlerServeHTTPOnBehalfOf(b *testing.B) {
	app, emulator, _ := apptest.NewOnBehalfOfApp(b, nil)
	h := &Handler{Application: apptest.OnBehalfOfApplication, app: app, logger: zap.NewNop(),
		header: DefaultHeader, purgeOnStatus: defaultPurgeOnStatus, injected: new(atomic.Pointer[injection])}
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.WriteHeader(http.StatusOK)
		return nil
	})
	userToken := "Bearer " + apptest.UserToken(b, emulator, "0a0a0a0a-0000-4000-8000-00000000000a", "", 0)
	req := httptest.NewRequest(http.MethodGet, "http://sidecar/", nil)
	req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
	req.Header.Set("Authorization", userToken)
	w := httptest.NewRecorder()
	if err := h.ServeHTTP(w, req, next); err != nil || w.Code != http.StatusOK {
		b.Fatalf("%v, status %d", err, w.Code)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		req.Header.Set("Authorization", userToken)
		if err := h.ServeHTTP(w, req, next); err != nil {
			b.Fatal(err)
		}
	}
}
