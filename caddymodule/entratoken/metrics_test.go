package entratoken

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/caddy-entra/caddy-entra/caddymodule/entraapp"
	"github.com/caddy-entra/caddy-entra/entra/entratest"
	"github.com/caddy-entra/caddy-entra/internal/apptest"
	"github.com/caddy-entra/caddy-entra/tokencache"
)

// counter reads one labelled counter of the handler's metrics.
func counter(vec *prometheus.CounterVec, labels ...string) float64 {
	return testutil.ToFloat64(vec.WithLabelValues(labels...))
}

// appSeries gathers the app's collectors, registered on a registry of the
// test's own, and returns the series of the family name by their label
// values (in the order of the label names), joined by ",".
func appSeries(t *testing.T, name string) map[string]float64 {
	t.Helper()
	registry := prometheus.NewPedanticRegistry()
	if err := entraapp.RegisterMetrics(registry); err != nil {
		t.Fatal(err)
	}
	families, err := registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]float64{}
	for _, family := range families {
		if family.GetName() != name {
			continue
		}
		for _, m := range family.GetMetric() {
			var values []string
			for _, label := range m.GetLabel() {
				values = append(values, label.GetValue())
			}
			series[strings.Join(values, ",")] = m.GetCounter().GetValue()
		}
	}
	return series
}

// appCounter reads one labelled counter of the app's metrics.
func appCounter(t *testing.T, name string, labels ...string) float64 {
	return appSeries(t, name)[strings.Join(labels, ",")]
}

func TestMetricsCountTokenRequestsInjectionsAndPurges(t *testing.T) {
	app, emulator, _ := apptest.NewApp(t, apptest.ClientSecret)
	h := &Handler{Application: "orders-api", app: app, logger: apptest.Logger(app), header: DefaultHeader, purgeOnStatus: defaultPurgeOnStatus}
	newReq := func() *http.Request { return httptest.NewRequest(http.MethodGet, "http://sidecar/", nil) }
	successes, injected, purged := appCounter(t, "caddy_entra_token_requests_total", "orders-api", string(tokencache.FetchSucceeded)), counter(requests, "orders-api", resultInjected), counter(purges, "orders-api")
	durations := len(appSeries(t, "caddy_entra_token_request_duration_seconds"))

	for range 3 {
		serveWith(t, h, http.StatusOK, newReq())
	}
	serveWith(t, h, http.StatusUnauthorized, newReq()) // purged: the next request fetches again
	serveWith(t, h, http.StatusOK, newReq())

	if got := appCounter(t, "caddy_entra_token_requests_total", "orders-api", string(tokencache.FetchSucceeded)) - successes; got != 2 || emulator.TokenRequests() != 2 {
		t.Errorf("token requests counted %v, emulator saw %d; want 2 and 2", got, emulator.TokenRequests())
	}
	if got := counter(requests, "orders-api", resultInjected) - injected; got != 5 {
		t.Errorf("injected %v, want 5", got)
	}
	if got := counter(purges, "orders-api") - purged; got != 1 {
		t.Errorf("purged %v, want 1", got)
	}
	if got := len(appSeries(t, "caddy_entra_token_request_duration_seconds")); got < max(durations, 1) {
		t.Errorf("token request duration series = %d", got)
	}

	// Throttled: 503 answered with Retry-After; the token request counts as throttled.
	throttledApp, throttledEmulator, _ := apptest.NewApp(t, apptest.ClientSecret)
	throttledEmulator.FailNext(-1, entratest.Failure{Status: http.StatusTooManyRequests, RetryAfter: "20"})
	throttled, answered := appCounter(t, "caddy_entra_token_requests_total", "graph-api", string(tokencache.FetchThrottled)), counter(requests, "graph-api", "MICROSOFT_TOKEN_REQUEST_FAILED")
	th := &Handler{Application: "graph-api", app: throttledApp, logger: apptest.Logger(throttledApp), header: DefaultHeader}
	if rec, _ := serveWith(t, th, http.StatusOK, newReq()); rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", rec.Code)
	}
	if got := appCounter(t, "caddy_entra_token_requests_total", "graph-api", string(tokencache.FetchThrottled)) - throttled; got != 1 {
		t.Errorf("throttled token requests %v, want 1", got)
	}
	if got := counter(requests, "graph-api", "MICROSOFT_TOKEN_REQUEST_FAILED") - answered; got != 1 {
		t.Errorf("requests answered MICROSOFT_TOKEN_REQUEST_FAILED %v, want 1", got)
	}
}

func TestMetricsRegisterOnEachConfigsRegistryAndHoldNoSecret(t *testing.T) {
	app, _, _ := apptest.NewApp(t, apptest.ClientSecret)
	h := &Handler{Application: "orders-api", app: app, logger: apptest.Logger(app), header: DefaultHeader}
	_, seen := serveWith(t, h, http.StatusOK, httptest.NewRequest(http.MethodGet, "http://sidecar/", nil))
	token := strings.TrimPrefix(seen[0], "Bearer ")

	registry := prometheus.NewPedanticRegistry()
	for range 2 { // a config provisions several times; a reload brings a new registry
		if err := entraapp.RegisterMetrics(registry, requests, purges); err != nil {
			t.Fatal(err)
		}
	}
	families, err := registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	names := map[string]bool{}
	for _, family := range families {
		names[family.GetName()] = true
		if _, err := expfmt.MetricFamilyToText(&text, family); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"caddy_entra_token_requests_total", "caddy_entra_requests_total", "caddy_entra_token_request_duration_seconds",
		"caddy_entra_store_available"} {
		if !names[want] {
			t.Errorf("%s not gathered (got %v)", want, names)
		}
	}
	if strings.Contains(text.String(), token) || strings.Contains(text.String(), apptest.ClientSecret) {
		t.Error("the metrics hold the token or the secret")
	}
	if !strings.Contains(text.String(), "caddy_entra_store_available 1") {
		t.Errorf("store_available is not 1 with the memory store:\n%s", text.String())
	}
}
