package entratokenendpoint

import (
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-entra/caddy-entra/internal/apptest"
)

func TestEndpointRefusesWhatABrowserSends(t *testing.T) {
	app, emulator, _ := apptest.NewApp(t, apptest.ClientSecret)
	e, _ := newTestEndpoint(t, app, ProtocolRecord, nil)
	refusals := func(reason string) float64 {
		return testutil.ToFloat64(endpointRefusals.WithLabelValues(ProtocolRecord, reason))
	}
	before := refusals(reasonBrowser)
	for name, browser := range apptest.BrowserRequests() {
		req := endpointRequest(http.MethodGet, "/token?applicationName=orders-api", map[string]string{"X-IDENTITY-HEADER": unitEndpointSecret})
		browser(req)
		rec, body := call(t, e, req)
		if rec.Code != http.StatusForbidden || body["code"] != "forbidden" {
			t.Errorf("%s: %d %v", name, rec.Code, body)
		}
	}
	if got := refusals(reasonBrowser) - before; got != float64(len(apptest.BrowserRequests())-1) {
		t.Errorf("refusals{reason=browser} grew by %v, want %d (the Host refusal counts as host)", got, len(apptest.BrowserRequests())-1)
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

// TestEndpointRefusesEveryFetchMetadata: a page the sidecar's origin
// serves (an upstream's HTML) fetches same-origin, and a link is "none";
// neither gets a token here, though both pass entra_token's checks.
func TestEndpointRefusesEveryFetchMetadata(t *testing.T) {
	app, emulator, _ := apptest.NewApp(t, apptest.ClientSecret)
	e, _ := newTestEndpoint(t, app, ProtocolIMDS, nil)
	for name, header := range map[string]map[string]string{
		"same-origin fetch": {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"},
		"typed URL":         {"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-User": "?1"},
		"site only":         {"sec-fetch-site": "same-origin"},
	} {
		req := endpointRequest(http.MethodGet, "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=api://orders", map[string]string{"Metadata": "true"})
		for field, value := range header {
			req.Header.Set(field, value)
		}
		if rec, body := call(t, e, req); rec.Code != http.StatusForbidden || body["error"] != "forbidden" {
			t.Errorf("%s: %d %v, want 403 forbidden", name, rec.Code, keys(body))
		}
	}
	if got := emulator.TokenRequests(); got != 0 {
		t.Errorf("refused requests made %d token requests, want none", got)
	}
	// An SDK's request, and Node's fetch (undici), which sends
	// Sec-Fetch-Mode: cors on every request and cannot leave it out.
	for name, header := range map[string]map[string]string{
		"SDK":        nil,
		"Node fetch": {"Sec-Fetch-Mode": "cors", "Accept-Language": "*", "User-Agent": "node"},
	} {
		req := endpointRequest(http.MethodGet, "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=api://orders", map[string]string{"Metadata": "true"})
		for field, value := range header {
			req.Header.Set(field, value)
		}
		if rec, body := call(t, e, req); rec.Code != http.StatusOK {
			t.Errorf("%s: %d %v, want 200", name, rec.Code, keys(body))
		}
	}
}

// TestPeerRefusalsCannotFloodTheLog: wrong secrets, proxied requests and
// remote peers (any container on a handoff/0.0.0.0 network can send them)
// are all counted, and logged as a warning at most once a minute, with the
// number not logged since.
func TestPeerRefusalsCannotFloodTheLog(t *testing.T) {
	app, _, _ := apptest.NewApp(t, apptest.ClientSecret)
	e, logs := newTestEndpoint(t, app, ProtocolAppService, nil)
	before := testutil.ToFloat64(endpointRefusals.WithLabelValues(ProtocolAppService, reasonWrongSecret))
	for i := range 50 {
		req := endpointRequest(http.MethodGet, "/msi/token?api-version=2019-08-01&resource=api://orders", map[string]string{"X-IDENTITY-HEADER": "wrong-secret-of-16-chars"})
		if i%2 == 1 {
			req.Header.Set("X-Forwarded-For", "192.0.2.1")
		}
		call(t, e, req)
	}
	warnings := logs.FilterMessage("token endpoint refused a request").AllUntimed()
	warned := 0
	for _, entry := range warnings {
		if entry.Level == zapcore.WarnLevel {
			warned++
		}
	}
	if warned != 1 {
		t.Errorf("50 refused peers logged %d warnings, want 1", warned)
	}
	if got := testutil.ToFloat64(endpointRefusals.WithLabelValues(ProtocolAppService, reasonWrongSecret)) - before; got != 25 {
		t.Errorf("refusals{reason=wrong_secret} grew by %v, want 25", got)
	}
}
