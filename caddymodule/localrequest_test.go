package caddymodule

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestHostRule(t *testing.T) {
	hosts, err := checkHosts([]string{"sidecar", "Entra-Sidecar.internal."})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		host string
		want bool
	}{
		{"", true},
		{"127.0.0.1", true},
		{"127.0.0.1:8080", true},
		{"10.1.2.3:8080", true},
		{"[::1]:8080", true},
		{"[::1]", true},
		{"::1", true},
		{"[fe80::1%25eth0]:8080", true},
		{"localhost", true},
		{"LOCALHOST:8080", true},
		{"localhost.:8080", true},
		{"app.localhost:8080", true},
		{"sidecar", true},
		{"sidecar:8080", true},
		{"SideCar.:9", true},
		{"entra-sidecar.internal:443", true},
		{"rebind.attacker.example:8080", false},
		{"rebind.attacker.example", false},
		{"sidecar.attacker.example", false},
		{"localhost.attacker.example", false},
		{"attacker-localhost", false},
		{"sidecarx", false},
	} {
		if got := isLocalHost(tc.host, hosts); got != tc.want {
			t.Errorf("Host %q: local %v, want %v", tc.host, got, tc.want)
		}
	}
	if isLocalHost("sidecar:8080", nil) {
		t.Error("a service name is accepted without the hosts option")
	}
}

func TestHostsEntriesCheckedAtLoad(t *testing.T) {
	for _, tc := range []struct {
		entry, want string
	}{
		{"", "must not be empty"},
		{"sidecar:8080", "without a port"},
		{"http://sidecar", "without a scheme"},
		{"*.svc.cluster.local", "wildcards are not supported"},
		{"127.0.0.1", "IP addresses are always accepted"},
		{"[::1]", "IP addresses are always accepted"},
		{"side car", "not a DNS name"},
		{"sidecar/x", "not a DNS name"},
		{"a..b", "not a DNS name"},
	} {
		app, _, _ := newTestApp(t, unitClientSecret)
		fresh := &App{IdentityConfig: app.IdentityConfig, Applications: app.Applications, Hosts: []string{"ok", tc.entry}}
		err := fresh.provision(caddy.NewReplacer())
		if err == nil {
			_ = fresh.Cleanup()
			t.Errorf("hosts entry %q accepted", tc.entry)
			continue
		}
		if !strings.Contains(err.Error(), "MICROSOFT_PROVIDER_INVALID_CONFIG: hosts[1]") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("hosts entry %q: %v, want hosts[1] and %q", tc.entry, err, tc.want)
		}
	}
	hosts, err := checkHosts([]string{" Sidecar ", "orders-sidecar.default.svc.cluster.local."})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"sidecar", "orders-sidecar.default.svc.cluster.local"} {
		if _, ok := hosts[name]; !ok {
			t.Errorf("%q is not in %v", name, hosts)
		}
	}
}

// browserRequests are what a web page makes a browser send to the sidecar:
// its own name rebound to 127.0.0.1, and cross-site requests.
func browserRequests() map[string]func(*http.Request) {
	return map[string]func(*http.Request){
		"rebound Host": func(r *http.Request) { r.Host = "rebind.attacker.example:8080" },
		"text/plain POST Origin": func(r *http.Request) {
			r.Method = http.MethodPost
			r.Header.Set("Content-Type", "text/plain")
			r.Header.Set("Origin", "https://evil.example")
		},
		"Origin null":            func(r *http.Request) { r.Header.Set("Origin", "null") },
		"Sec-Fetch-Site cross":   func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "cross-site") },
		"Sec-Fetch-Site same":    func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "same-site") },
		"Sec-Fetch-Site unknown": func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "other") },
	}
}

// localRequests are what local applications send.
func localRequests() map[string]func(*http.Request) {
	return map[string]func(*http.Request){
		"service name":          func(r *http.Request) { r.Host = "sidecar:8080" },
		"localhost":             func(r *http.Request) { r.Host = "localhost:8080" },
		"IP address":            func(r *http.Request) { r.Host = "127.0.0.1:8080" },
		"same-origin":           func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "same-origin") },
		"typed in a browser":    func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "none") },
		"IPv6 address, no port": func(r *http.Request) { r.Host = "[::1]" },
	}
}

// assertNotLocal checks a refusal of CodeRequestNotLocal.
func assertNotLocal(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	var body errorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("answer %d is not JSON: %q", rec.Code, rec.Body.String())
	}
	if rec.Code != http.StatusForbidden || body.Code != CodeRequestNotLocal {
		t.Errorf("answer %d %+v, want 403 %s", rec.Code, body, CodeRequestNotLocal)
	}
	if rec.Header().Get("Cache-Control") != "no-store" || strings.Contains(rec.Body.String(), "eyJ") {
		t.Errorf("answer headers %v, body %q", rec.Header(), rec.Body.String())
	}
}

func TestHandlerRefusesWhatABrowserSends(t *testing.T) {
	app, emulator, _ := newTestApp(t, unitClientSecret)
	before := testutil.ToFloat64(metrics().requests.WithLabelValues("graph-api", CodeRequestNotLocal))
	for name, browser := range browserRequests() {
		req := httptest.NewRequest(http.MethodGet, "http://sidecar/v1/me", nil)
		req.RemoteAddr = "127.0.0.1:40000"
		browser(req)
		rec, _, called := serve(t, app, "graph-api", req)
		if called {
			t.Errorf("%s: next was called", name)
		}
		assertNotLocal(t, rec)
		if strings.Contains(name, "Host") && !strings.Contains(rec.Body.String(), "hosts option") {
			t.Errorf("%s: the message does not name the hosts option: %s", name, rec.Body.String())
		}
	}
	if got := emulator.TokenRequests(); got != 0 {
		t.Errorf("refused requests made %d token requests, want none", got)
	}
	after := testutil.ToFloat64(metrics().requests.WithLabelValues("graph-api", CodeRequestNotLocal))
	if after-before != float64(len(browserRequests())) {
		t.Errorf("requests_total{result=%s} grew by %v, want %d", CodeRequestNotLocal, after-before, len(browserRequests()))
	}
	for name, local := range localRequests() {
		req := httptest.NewRequest(http.MethodGet, "http://sidecar/v1/me", nil)
		local(req)
		rec, seen, called := serve(t, app, "graph-api", req)
		if !called || len(seen) != 1 || !strings.HasPrefix(seen[0], "Bearer ") {
			t.Errorf("%s: %d, next called %v", name, rec.Code, called)
		}
	}
}

// serveReady runs one request through an entra_ready of every application.
func serveReady(t *testing.T, app *App, req *http.Request) *httptest.ResponseRecorder {
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
	app, emulator, _ := newTestApp(t, unitClientSecret)
	for name, browser := range browserRequests() {
		req := httptest.NewRequest(http.MethodGet, "http://127.0.0.1:2020/readyz", nil)
		req.RemoteAddr = "127.0.0.1:40000"
		browser(req)
		t.Run(name, func(t *testing.T) { assertNotLocal(t, serveReady(t, app, req)) })
	}
	if got := emulator.TokenRequests(); got != 0 {
		t.Errorf("refused probes made %d token requests, want none", got)
	}
}

func TestReadyShowsDetailsToLoopbackPeersOnly(t *testing.T) {
	app, _, _ := newTestApp(t, unitClientSecret)
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

func TestEndpointRefusesWhatABrowserSends(t *testing.T) {
	app, emulator, _ := newTestApp(t, unitClientSecret)
	e, _ := newTestEndpoint(t, app, ProtocolRecord, nil)
	refusals := func(reason string) float64 {
		return testutil.ToFloat64(metrics().endpointRefusals.WithLabelValues(ProtocolRecord, reason))
	}
	before := refusals(reasonBrowser)
	for name, browser := range browserRequests() {
		req := endpointRequest(http.MethodGet, "/token?applicationName=orders-api", map[string]string{"X-IDENTITY-HEADER": unitEndpointSecret})
		browser(req)
		rec, body := call(t, e, req)
		if rec.Code != http.StatusForbidden || body["code"] != "forbidden" {
			t.Errorf("%s: %d %v", name, rec.Code, body)
		}
	}
	if got := refusals(reasonBrowser) - before; got != float64(len(browserRequests())-1) {
		t.Errorf("refusals{reason=browser} grew by %v, want %d (the Host refusal counts as host)", got, len(browserRequests())-1)
	}
	if got := emulator.TokenRequests(); got != 0 {
		t.Errorf("refused requests made %d token requests, want none", got)
	}
	req := endpointRequest(http.MethodGet, "/token?applicationName=orders-api", map[string]string{"X-IDENTITY-HEADER": unitEndpointSecret})
	req.Host = "sidecar:8080" // listed in hosts
	if rec, body := call(t, e, req); rec.Code != http.StatusOK {
		t.Errorf("a Host listed in hosts: %d %v", rec.Code, keys(body))
	}
}

func TestUnmarshalCaddyfileHosts(t *testing.T) {
	var app App
	input := "entra {\n hosts sidecar entra-sidecar.internal\n hosts orders-sidecar\n application a s/.default\n }"
	if err := app.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(app.Hosts)
	if string(got) != `["sidecar","entra-sidecar.internal","orders-sidecar"]` {
		t.Errorf("hosts = %s", got)
	}
	var empty App
	err := empty.UnmarshalCaddyfile(caddyfile.NewTestDispenser("entra {\n hosts\n }"))
	if err == nil || !strings.Contains(err.Error(), "hosts: at least one name is required") {
		t.Errorf("hosts without a name: %v", err)
	}
}

// TestRefusalLogLetsOneEntryThroughPerInterval: a refusal a web page can
// cause at will is logged at most once per refusalLogInterval, the entry
// saying how many were not logged since.
func TestRefusalLogLetsOneEntryThroughPerInterval(t *testing.T) {
	var log refusalLog
	start := time.Unix(1_800_000_000, 0)
	if ok, n := log.allow(start); !ok || n != 0 {
		t.Fatalf("first refusal: logged %v, %d unlogged; want logged, 0", ok, n)
	}
	for i := 1; i <= 3; i++ {
		if ok, _ := log.allow(start.Add(time.Duration(i) * time.Second)); ok {
			t.Fatalf("refusal %d within the interval was logged", i)
		}
	}
	if ok, n := log.allow(start.Add(refusalLogInterval)); !ok || n != 3 {
		t.Fatalf("first refusal after the interval: logged %v, %d unlogged; want logged, 3", ok, n)
	}
	var none *refusalLog
	if ok, _ := none.allow(start); !ok {
		t.Fatal("a nil refusalLog refused an entry")
	}
}

// TestAPageCannotFloodTheLog: however many requests a web page sends,
// entra_token logs one warning per interval (and counts every refusal).
func TestAPageCannotFloodTheLog(t *testing.T) {
	app, _, _ := newTestApp(t, unitClientSecret)
	core, logs := observer.New(zapcore.WarnLevel)
	app.logger, app.refusals = zap.New(core), new(refusalLog)
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
