package entraapp

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/entra/entratest"
	"github.com/caddy-entra/caddy-entra/tokencache"
)

// counter reads one labelled counter of the module's metrics.
func counter(vec *prometheus.CounterVec, labels ...string) float64 {
	return testutil.ToFloat64(vec.WithLabelValues(labels...))
}

// TestTokenRequestMetricsFollowTheCachesClassification: token requests
// are counted as the cache's backoff classifies them: a wrong secret is a
// permanent_error, and a request that fails before it is sent (the
// federated token file is gone) is a transient_error, as
// docs/operations.md says (Metrics).
func TestTokenRequestMetricsFollowTheCachesClassification(t *testing.T) {
	wrongSecret, _, logs := newTestApp(t, "wrong-secret")
	permanent := counter(tokenRequests, "graph-api", string(tokencache.FetchPermanent))
	if _, err := wrongSecret.Token(t.Context(), "graph-api"); err == nil {
		t.Fatal("wrong secret: nil error")
	}
	if got := counter(tokenRequests, "graph-api", string(tokencache.FetchPermanent)) - permanent; got != 1 {
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
	transient := counter(tokenRequests, "files-api", string(tokencache.FetchTransient))
	if _, err := app.Token(t.Context(), "files-api"); err == nil {
		t.Fatal("no federated token file: nil error")
	}
	if got := counter(tokenRequests, "files-api", string(tokencache.FetchTransient)) - transient; got != 1 || emulator.TokenRequests() != 0 {
		t.Errorf("a request that was never sent counted %v transient_error (emulator saw %d), want 1 (0)", got, emulator.TokenRequests())
	}
}

// TestStoreDropsAreCountedByResult: each drop the store asks for is
// counted as dropped or kept.
func TestStoreDropsAreCountedByResult(t *testing.T) {
	dropped, kept := counter(storeDrops, "drops-api", "dropped"), counter(storeDrops, "drops-api", "kept")
	observe := storeDropObserver("drops-api")
	observe(true)
	observe(false)
	observe(false)
	if d, k := counter(storeDrops, "drops-api", "dropped")-dropped, counter(storeDrops, "drops-api", "kept")-kept; d != 1 || k != 2 {
		t.Errorf("dropped %v kept %v, want 1 and 2", d, k)
	}
}
