package entratokenendpoint

import (
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

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
