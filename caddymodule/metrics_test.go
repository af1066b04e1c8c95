package caddymodule

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/entra/entratest"
	"github.com/caddy-entra/caddy-entra/tokencache"
)

// counter reads one labelled counter of the module's metrics.
func counter(vec *prometheus.CounterVec, labels ...string) float64 {
	return testutil.ToFloat64(vec.WithLabelValues(labels...))
}

func TestMetricsCountTokenRequestsInjectionsAndPurges(t *testing.T) {
	m := metrics()
	app, emulator, _ := newTestApp(t, unitClientSecret)
	h := &Handler{Application: "orders-api", app: app, logger: app.logger, header: DefaultHeader, purgeOnStatus: defaultPurgeOnStatus}
	newReq := func() *http.Request { return httptest.NewRequest(http.MethodGet, "http://sidecar/", nil) }
	successes, injected, purged := counter(m.tokenRequests, "orders-api", string(tokencache.FetchSucceeded)), counter(m.requests, "orders-api", resultInjected), counter(m.purges, "orders-api")
	durations := testutil.CollectAndCount(m.tokenRequestDuration)

	for range 3 {
		serveWith(t, h, http.StatusOK, newReq())
	}
	serveWith(t, h, http.StatusUnauthorized, newReq()) // purged: the next request fetches again
	serveWith(t, h, http.StatusOK, newReq())

	if got := counter(m.tokenRequests, "orders-api", string(tokencache.FetchSucceeded)) - successes; got != 2 || emulator.TokenRequests() != 2 {
		t.Errorf("token requests counted %v, emulator saw %d; want 2 and 2", got, emulator.TokenRequests())
	}
	if got := counter(m.requests, "orders-api", resultInjected) - injected; got != 5 {
		t.Errorf("injected %v, want 5", got)
	}
	if got := counter(m.purges, "orders-api") - purged; got != 1 {
		t.Errorf("purged %v, want 1", got)
	}
	if got := testutil.CollectAndCount(m.tokenRequestDuration); got < max(durations, 1) {
		t.Errorf("token request duration series = %d", got)
	}

	// Throttled: 503 answered with Retry-After; the token request counts as throttled.
	throttledApp, throttledEmulator, _ := newTestApp(t, unitClientSecret)
	throttledEmulator.FailNext(-1, entratest.Failure{Status: http.StatusTooManyRequests, RetryAfter: "20"})
	throttled, answered := counter(m.tokenRequests, "graph-api", string(tokencache.FetchThrottled)), counter(m.requests, "graph-api", "MICROSOFT_TOKEN_REQUEST_FAILED")
	th := &Handler{Application: "graph-api", app: throttledApp, logger: throttledApp.logger, header: DefaultHeader}
	if rec, _ := serveWith(t, th, http.StatusOK, newReq()); rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", rec.Code)
	}
	if got := counter(m.tokenRequests, "graph-api", string(tokencache.FetchThrottled)) - throttled; got != 1 {
		t.Errorf("throttled token requests %v, want 1", got)
	}
	if got := counter(m.requests, "graph-api", "MICROSOFT_TOKEN_REQUEST_FAILED") - answered; got != 1 {
		t.Errorf("requests answered MICROSOFT_TOKEN_REQUEST_FAILED %v, want 1", got)
	}
}

// TestTokenRequestMetricsFollowTheCachesClassification: token requests
// are counted as the cache's backoff classifies them: a wrong secret is a
// permanent_error, and a request that fails before it is sent (the
// federated token file is gone) is a transient_error, as
// docs/operations.md says (Metrics).
func TestTokenRequestMetricsFollowTheCachesClassification(t *testing.T) {
	m := metrics()
	wrongSecret, _, logs := newTestApp(t, "wrong-secret")
	permanent := counter(m.tokenRequests, "graph-api", string(tokencache.FetchPermanent))
	if _, err := wrongSecret.Token(t.Context(), "graph-api"); err == nil {
		t.Fatal("wrong secret: nil error")
	}
	if got := counter(m.tokenRequests, "graph-api", string(tokencache.FetchPermanent)) - permanent; got != 1 {
		t.Errorf("wrong secret counted %v permanent_error, want 1", got)
	}
	if l := logs.FilterMessage("token request failed").All(); len(l) != 1 || l[0].ContextMap()["result"] != "permanent_error" {
		t.Errorf("failure logs %v, want one with result permanent_error", l)
	}

	emulator, server, err := entratest.NewServer(entratest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(server.Close)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	app := &App{
		IdentityConfig: IdentityConfig{AuthorityHost: server.URL, TenantID: emulator.TenantID(), ClientID: unitClientID,
			FederatedTokenFile: tokenFile},
		Applications: map[string]*Application{"files-api": {Scopes: []string{"api://files/.default"}}},
		logger:       zap.NewNop(),
	}
	if err := app.provision(caddy.NewReplacer()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = app.Cleanup() })
	if err := os.Remove(tokenFile); err != nil {
		t.Fatal(err)
	}
	transient := counter(m.tokenRequests, "files-api", string(tokencache.FetchTransient))
	if _, err := app.Token(t.Context(), "files-api"); err == nil {
		t.Fatal("no federated token file: nil error")
	}
	if got := counter(m.tokenRequests, "files-api", string(tokencache.FetchTransient)) - transient; got != 1 || emulator.TokenRequests() != 0 {
		t.Errorf("a request that was never sent counted %v transient_error (emulator saw %d), want 1 (0)", got, emulator.TokenRequests())
	}
}

func TestMetricsRegisterOnEachConfigsRegistryAndHoldNoSecret(t *testing.T) {
	app, _, _ := newTestApp(t, unitClientSecret)
	h := &Handler{Application: "orders-api", app: app, logger: app.logger, header: DefaultHeader}
	_, seen := serveWith(t, h, http.StatusOK, httptest.NewRequest(http.MethodGet, "http://sidecar/", nil))
	token := strings.TrimPrefix(seen[0], "Bearer ")

	registry := prometheus.NewPedanticRegistry()
	for range 2 { // a config provisions several times; a reload brings a new registry
		if err := registerMetrics(registry); err != nil {
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
	if strings.Contains(text.String(), token) || strings.Contains(text.String(), unitClientSecret) {
		t.Error("the metrics hold the token or the secret")
	}
	if !strings.Contains(text.String(), "caddy_entra_store_available 1") {
		t.Errorf("store_available is not 1 with the memory store:\n%s", text.String())
	}
}

// TestAHandlerThatFailsToProvisionMakesNoSeries: a config rejected at load
// (an application name that is not configured) leaves no metric series
// behind, so configs posted to the admin API cannot grow the metrics.
func TestAHandlerThatFailsToProvisionMakesNoSeries(t *testing.T) {
	before := testutil.CollectAndCount(metrics().requests)
	if err := validateConfig(t, jsonConfig(`{"tenant_id": "t", "client_id": "c", "client_secret": "s",
		"applications": {"graph-api": {"scopes": ["https://graph.microsoft.com/.default"]}}}`, "no-such-application")); err == nil {
		t.Fatal("config accepted")
	}
	if after := testutil.CollectAndCount(metrics().requests); after != before {
		t.Errorf("requests_total series %d -> %d after a rejected config", before, after)
	}
}

// TestStoreDropsAreCountedByResult: each drop the store asks for is
// counted as dropped or kept.
func TestStoreDropsAreCountedByResult(t *testing.T) {
	m := metrics()
	dropped, kept := counter(m.storeDrops, "drops-api", "dropped"), counter(m.storeDrops, "drops-api", "kept")
	observe := storeDropObserver("drops-api")
	observe(true)
	observe(false)
	observe(false)
	if d, k := counter(m.storeDrops, "drops-api", "dropped")-dropped, counter(m.storeDrops, "drops-api", "kept")-kept; d != 1 || k != 2 {
		t.Errorf("dropped %v kept %v, want 1 and 2", d, k)
	}
}
