package integration

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// scrapeMetrics reads the replica's Prometheus metrics from its admin API.
func scrapeMetrics(t *testing.T, replica *sidecar) string {
	t.Helper()
	resp, err := http.Get(replica.AdminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	return string(body)
}

// metricLines returns the lines of text that begin with prefix.
func metricLines(text, prefix string) []string {
	var lines []string
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, prefix) {
			lines = append(lines, line)
		}
	}
	return lines
}

func TestMetricsThroughTheAdminAPI(t *testing.T) {
	f := newFleet(t)
	replica := startSidecar(t, fleetConfig("", ""), f.env(testClientSecret)...)
	token := tokenVia(t, replica, f.upstream, "/orders/a")
	if statuses := hammer(t, replica.URL+"/orders/b", 40); statuses[http.StatusOK] != 40 {
		t.Fatalf("statuses %v", statuses)
	}

	text := scrapeMetrics(t, replica)
	for _, want := range []string{
		`caddy_entra_token_requests_total{application="orders-api",result="success"} 1`,
		`caddy_entra_requests_total{application="orders-api",result="injected"} 41`,
		`caddy_entra_token_request_duration_seconds_count{application="orders-api"} 1`,
		`caddy_entra_store_available 1`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("metrics lack %q; caddy_entra lines:\n%s", want, strings.Join(metricLines(text, "caddy_entra_"), "\n"))
		}
	}
	if strings.Contains(text, token) || strings.Contains(text, testClientSecret) {
		t.Error("the metrics hold the token or the client secret")
	}

	// Redis down: a replica that starts then serves from its own fetch, and
	// its gauge shows the outage (the warm replica, serving from memory,
	// makes no store call to notice it).
	f.redis.proc.Stop(t)
	cold := startSidecar(t, fleetConfig("", ""), f.env(testClientSecret)...)
	if statuses := hammer(t, cold.URL+"/orders/c", 10); statuses[http.StatusOK] != 10 {
		t.Fatalf("with redis down: statuses %v", statuses)
	}
	if text := scrapeMetrics(t, cold); !strings.Contains(text, "caddy_entra_store_available 0\n") {
		t.Errorf("with redis down, store_available is not 0:\n%s", strings.Join(metricLines(text, "caddy_entra_store"), "\n"))
	}
}
