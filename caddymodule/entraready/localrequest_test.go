package entraready

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/caddy-entra/caddy-entra/caddymodule/entraapp"
	"github.com/caddy-entra/caddy-entra/internal/apptest"
)

// serveReady runs one request through an entra_ready of every application.
func serveReady(t *testing.T, app *entraapp.App, req *http.Request) *httptest.ResponseRecorder {
	t.Helper()
	r := &Ready{app: app}
	if err := r.resolveNames(); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	if err := r.ServeHTTP(rec, req, nil); err != nil {
		t.Fatal(err)
	}
	return rec
}

func TestReadyRefusesWhatABrowserSends(t *testing.T) {
	app, emulator, _ := apptest.NewApp(t, apptest.ClientSecret)
	refused := func() float64 { return testutil.ToFloat64(probes.WithLabelValues(entraapp.CodeRequestNotLocal)) }
	before, browsers := refused(), apptest.BrowserRequests()
	for name, browser := range browsers {
		req := httptest.NewRequest(http.MethodGet, "http://127.0.0.1:2020/readyz", nil)
		req.RemoteAddr = "127.0.0.1:40000"
		browser(req)
		t.Run(name, func(t *testing.T) { apptest.AssertNotLocal(t, serveReady(t, app, req)) })
	}
	if got := emulator.TokenRequests(); got != 0 {
		t.Errorf("refused probes made %d token requests, want none", got)
	}
	if got := refused() - before; got != float64(len(browsers)) {
		t.Errorf("counted %v refusals, want %d", got, len(browsers))
	}
}

func TestReadyShowsDetailsToLoopbackPeersOnly(t *testing.T) {
	app, _, _ := apptest.NewApp(t, apptest.ClientSecret)
	unix := func(r *http.Request) *http.Request {
		addr := &net.UnixAddr{Name: "/run/entra/probe.sock", Net: "unix"}
		return r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, net.Addr(addr)))
	}
	for _, tc := range []struct {
		name    string
		remote  string
		wrap    func(*http.Request) *http.Request
		details bool
	}{
		{"loopback", "127.0.0.1:40000", nil, true},
		{"loopback v6", "[::1]:40000", nil, true},
		{"unix socket", "@", unix, true},
		{"pod network", "10.244.0.1:40000", nil, false},
		{"v6 network", "[2001:db8::1]:40000", nil, false},
	} {
		req := httptest.NewRequest(http.MethodGet, "http://10.244.0.7:2020/readyz", nil)
		req.RemoteAddr = tc.remote
		if tc.wrap != nil {
			req = tc.wrap(req)
		}
		rec := serveReady(t, app, req)
		var body map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("%s: %q", tc.name, rec.Body.String())
		}
		if rec.Code != http.StatusOK || body["ready"] != true {
			t.Errorf("%s: %d %v", tc.name, rec.Code, body)
		}
		_, hasApplications := body["applications"]
		if hasApplications != tc.details || (!tc.details && len(body) != 1) {
			t.Errorf("%s: answered %s, details wanted: %v", tc.name, rec.Body.String(), tc.details)
		}
	}
}
