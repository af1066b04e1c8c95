package integration

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// handoffCaddyfile is sidecarCaddyfile listening through the handoff network.
var handoffCaddyfile = strings.NewReplacer("bind 127.0.0.1", "bind handoff/127.0.0.1", "\tdebug\n", "\tdebug\n\thandoff\n").Replace(sidecarCaddyfile)

// handoffH1Caddyfile is handoffCaddyfile serving HTTP/1 only: Caddy then
// wraps each connection (its h2c check) before net/http sees it.
var handoffH1Caddyfile = strings.Replace(handoffCaddyfile, "\tdebug\n", "\tdebug\n\tservers {\n\t\tprotocols h1\n\t}\n", 1)

// handoffOnlyCaddyfile has no entra app: handoff/ is a Caddy feature of
// its own.
const handoffOnlyCaddyfile = `{
	admin 127.0.0.1:%[2]d
	handoff
}

:%[1]d {
	bind handoff/127.0.0.1
	handle_path /orders/* {
		reverse_proxy {$TEST_UPSTREAM}
	}
}
`

// TestReloadsThroughHandoffAnswerEveryRequestExactlyOnce reloads a replica 6
// times while 8 clients send POSTs (never retried by Go's client), half on
// keep-alive connections and half on a new connection each: every answered
// request is a 200 that reached the upstream exactly once, none is served
// twice, at most 2 are lost, connections are handed off (caddy_handoff_*),
// and the reloads cost no token request. With HTTP/1 only, the hooks reach
// the connections through Caddy's wrapper; without the entra app, handoff
// works alone.
func TestReloadsThroughHandoffAnswerEveryRequestExactlyOnce(t *testing.T) {
	for _, tc := range []struct{ name, caddyfile string }{
		{"default protocols", handoffCaddyfile},
		{"HTTP/1 only", handoffH1Caddyfile},
		{"no entra app", handoffOnlyCaddyfile},
	} {
		t.Run(tc.name, func(t *testing.T) { reloadUnderLoad(t, tc.caddyfile) })
	}
}

// reloadUnderLoad is TestReloadsThroughHandoffAnswerEveryRequestExactlyOnce
// for one Caddyfile template.
func reloadUnderLoad(t *testing.T, caddyfile string) {
	f := newFleet(t)
	replica := startSidecar(t, caddyfile, f.env(testClientSecret)...)
	withEntra := strings.Contains(caddyfile, "entra_token")
	if withEntra {
		tokenVia(t, replica, f.upstream, "/orders/warm")
	}

	configs := []string{reloadedConfig(t, f, replica, caddyfile, ""), reloadedConfig(t, f, replica, caddyfile, "/v2")}
	var mu sync.Mutex
	failures := map[string]string{}
	sent := 0
	var clients []*http.Client
	for worker := range 8 {
		transport := &http.Transport{DisableKeepAlives: worker%2 == 1}
		t.Cleanup(transport.CloseIdleConnections)
		clients = append(clients, &http.Client{Transport: transport, Timeout: 15 * time.Second})
	}
	var ids atomic.Int64
	traffic := startLoad(t, len(clients), func(worker int) {
		id := fmt.Sprintf("w%d-%d", worker, ids.Add(1))
		req, _ := http.NewRequest(http.MethodPost, replica.URL+"/orders/"+id, strings.NewReader(id))
		req.Header.Set("X-Request-Id", id)
		why := ""
		if resp, err := clients[worker].Do(req); err != nil {
			why = err.Error()
		} else {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				why = resp.Status
			}
		}
		mu.Lock()
		sent++
		if why != "" {
			failures[id] = why
		}
		mu.Unlock()
	})
	// Each config carries at least 80 requests, so that the 7 of them send
	// the 500 checked below.
	for reload := range 6 {
		traffic.awaitMore(t, 80)
		if status, body, err := postLoad(replica.AdminURL, configs[reload%2]); err != nil || status != http.StatusOK {
			t.Fatalf("reload %d: %d %s %v", reload, status, body, err)
		}
	}
	traffic.awaitMore(t, 80)
	traffic.stop()

	for id, why := range failures {
		t.Logf("request %s: %s", id, why)
		if !strings.Contains(why, "EOF") && !strings.Contains(why, "connection reset") {
			t.Errorf("request %s failed with %s, want only lost connections", id, why)
		}
	}
	// Plain `bind 127.0.0.1` loses about 0.25% here; through handoff none
	// was lost in every run measured. The bound leaves room for the one
	// window the handoff package documents (a whole reload between two
	// instructions of net/http); more is a regression.
	const maxLost = 2
	if len(failures) > maxLost {
		t.Errorf("%d of %d requests lost, want at most %d", len(failures), sent, maxLost)
	}
	perID := map[string]int{}
	for _, h := range f.upstream.allHeaders() {
		if id := h.Get("X-Request-Id"); id != "" {
			perID[id]++
		}
	}
	for id, n := range perID {
		if n != 1 {
			t.Errorf("request %s reached the upstream %d times, want once", id, n)
		}
	}
	if len(perID) != sent-len(failures) {
		t.Errorf("upstream saw %d requests, clients got %d answers", len(perID), sent-len(failures))
	}
	if got := f.emulator.TokenRequests(); withEntra && got != 1 {
		t.Errorf("token requests = %d after 6 reloads, want 1", got)
	}
	handoffs := metricLines(scrapeMetrics(t, replica), "caddy_handoff_")
	if len(handoffs) != 2 || strings.HasSuffix(handoffs[0], " 0") {
		t.Errorf("handoff metrics %q, want connections handed off over 6 reloads under load", handoffs)
	}
	t.Logf("%d requests over 6 reloads, %d failed; %s", sent, len(failures), strings.Join(handoffs, ", "))
	if sent < 500 {
		t.Errorf("only %d requests sent: the load did not run", sent)
	}
}

// reloadedConfig is replica's Caddyfile (from template) with its environment
// written in, and with prefix+"/orders" as the route, for loading through the
// admin API.
func reloadedConfig(t *testing.T, f *fleet, replica *sidecar, template, prefix string) string {
	t.Helper()
	config := fmt.Sprintf(template, portOf(t, replica.URL), portOf(t, replica.AdminURL))
	if prefix != "" {
		route := "\t\treverse_proxy {$TEST_UPSTREAM}\n"
		if strings.Contains(template, "entra_token") {
			route = "\t\tentra_token orders-api\n" + route
		}
		config = strings.Replace(config, "handle_path /orders/* {",
			"handle_path "+prefix+"/orders/* {\n"+route+"\t}\n\thandle_path /orders/* {", 1)
	}
	for _, kv := range f.env(testClientSecret) {
		name, value, _ := strings.Cut(kv, "=")
		config = strings.ReplaceAll(config, "{$"+name+"}", value)
	}
	return config
}
