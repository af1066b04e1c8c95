package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/entra/entratest"
)

// opsReplica is a sidecar with a readiness route, a liveness route and an
// admin client (over TCP, or a Unix socket).
type opsReplica struct {
	*sidecar
	admin     *http.Client
	adminBase string
}

// startOpsReplica runs a fleet replica whose entra block has extra lines,
// serving /healthz (liveness, no Entra), /readyz (entra_ready in a handle
// block, no route) and /orders/*. With unixAdmin the admin API listens on
// a Unix socket (mode 0600) as in the shipped configs, else on loopback.
func startOpsReplica(t *testing.T, f *fleet, entraExtra string, unixAdmin bool) *opsReplica {
	t.Helper()
	port, adminPort := freePort(t), freePort(t)
	dir := t.TempDir()
	adminLine := fmt.Sprintf("admin 127.0.0.1:%d", adminPort)
	socket := filepath.Join(dir, "admin.sock")
	if unixAdmin {
		adminLine = "admin unix/" + socket + "|0600"
	}
	config := fmt.Sprintf(`{
	%s
	debug
	entra {
%s
		redis {env.TEST_REDIS_URL} {
			key_prefix %s
			insecure_plaintext
		}
		%s
		application orders-api %s
	}
}

:%d {
	bind 127.0.0.1
	handle /healthz {
		respond "ok" 200
	}
	handle /readyz {
		entra_ready orders-api
	}
	handle_path /orders/* {
		entra_token orders-api
		reverse_proxy {$TEST_UPSTREAM}
	}
}
`, adminLine, testIdentity, testKeyPrefix, entraExtra, testScope, port)
	file := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(file, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	env := append(f.env(testClientSecret), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	proc := startProcess(t, env, caddyBinary, "run", "--config", file, "--adapter", "caddyfile")
	r := &opsReplica{
		sidecar:   &sidecar{URL: fmt.Sprintf("http://127.0.0.1:%d", port), proc: proc},
		admin:     &http.Client{Timeout: 40 * time.Second},
		adminBase: fmt.Sprintf("http://127.0.0.1:%d", adminPort),
	}
	if unixAdmin {
		r.admin.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}}
		r.adminBase = "http://localhost"
	}
	r.AdminURL = r.adminBase
	waitFor(t, "caddy on "+r.URL, 60*time.Second, func() error {
		if proc.Exited() {
			t.Fatalf("caddy exited:\n%s", proc.Output.String())
		}
		resp, err := http.Get(r.URL + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		_, _, _, err = r.call(http.MethodGet, "/config/")
		return err
	})
	if unixAdmin {
		if info, err := os.Stat(socket); err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("admin socket: %v, mode %v; want 0600", err, info.Mode().Perm())
		}
	}
	return r
}

// call sends a request to the replica's admin API.
func (r *opsReplica) call(method, path string) (int, http.Header, string, error) {
	req, err := http.NewRequest(method, r.adminBase+path, nil)
	if err != nil {
		return 0, nil, "", err
	}
	resp, err := r.admin.Do(req)
	if err != nil {
		return 0, nil, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body), nil
}

// adminCall is call that fails the test on a transport error or another
// status than want, and keeps the body for the secrecy check.
func (r *opsReplica) adminCall(t *testing.T, bodies *[]string, method, path string, want int) (http.Header, string) {
	t.Helper()
	status, header, body, err := r.call(method, path)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	*bodies = append(*bodies, body)
	if status != want {
		t.Fatalf("%s %s: status %d, want %d: %s", method, path, status, want, body)
	}
	return header, body
}

// readyProbe is one GET /readyz.
func readyProbe(t *testing.T, r *opsReplica) response {
	t.Helper()
	return send(t, r.URL+"/readyz", nil)
}

func TestPrefetchMakesTheSidecarReadyBeforeItsFirstRequest(t *testing.T) {
	f := newFleet(t)
	replica := startOpsReplica(t, f, "prefetch", false)
	// Nothing has asked for a token: the prefetch does, on its own.
	waitFor(t, "the prefetch's token request", 10*time.Second, func() error {
		if n := f.emulator.TokenRequests(); n != 1 {
			return fmt.Errorf("%d token requests", n)
		}
		return nil
	})
	waitFor(t, "the prefetched token in redis", 10*time.Second, func() error {
		if len(f.records(t)) != 1 {
			return fmt.Errorf("no record yet")
		}
		return nil
	})
	probe := readyProbe(t, replica)
	var body struct {
		Ready        bool
		Applications map[string]struct {
			Ready                bool       `json:"ready"`
			AccessTokenExpiresAt *time.Time `json:"accessTokenExpiresAt"`
		}
	}
	if err := json.Unmarshal([]byte(probe.Body), &body); err != nil || probe.Status != http.StatusOK || !body.Ready ||
		!body.Applications["orders-api"].Ready || body.Applications["orders-api"].AccessTokenExpiresAt == nil {
		t.Fatalf("readiness before any request: %d %s", probe.Status, probe.Body)
	}
	token := tokenVia(t, replica.sidecar, f.upstream, "/orders/a")
	if n := f.emulator.TokenRequests(); n != 1 {
		t.Errorf("%d token requests, want 1: the first request uses the prefetched token", n)
	}
	if status, _ := get(t, replica.URL+"/healthz", nil); status != http.StatusOK {
		t.Errorf("liveness: %d", status)
	}
	assertNoSecrets(t, replica.logs()+probe.Body, token)
}

func TestReadyFollowsTheTokenEndpoint(t *testing.T) {
	f := newFleet(t)
	f.emulator.FailNext(-1, entratest.Failure{Status: http.StatusServiceUnavailable, Error: "temporarily_unavailable",
		Description: "The service is temporarily unavailable.", ErrorCodes: []int{90033}})
	replica := startOpsReplica(t, f, "", false)
	probe := readyProbe(t, replica)
	var body struct {
		Ready        bool `json:"ready"`
		Applications map[string]struct {
			Ready      bool   `json:"ready"`
			Code       string `json:"code"`
			Error      string `json:"error"`
			ErrorCodes []int  `json:"errorCodes"`
		} `json:"applications"`
	}
	if err := json.Unmarshal([]byte(probe.Body), &body); err != nil {
		t.Fatalf("body %q: %v", probe.Body, err)
	}
	app := body.Applications["orders-api"]
	if probe.Status != http.StatusServiceUnavailable || body.Ready || app.Ready || app.Code != "MICROSOFT_TOKEN_REQUEST_FAILED" ||
		app.Error != "temporarily_unavailable" || len(app.ErrorCodes) != 1 || app.ErrorCodes[0] != 90033 {
		t.Fatalf("while the endpoint fails: %d %s", probe.Status, probe.Body)
	}
	if _, err := strconv.Atoi(probe.Header.Get("Retry-After")); err != nil {
		t.Errorf("Retry-After %q, want seconds", probe.Header.Get("Retry-After"))
	}
	// Liveness does not depend on Entra.
	if status, _ := get(t, replica.URL+"/healthz", nil); status != http.StatusOK {
		t.Errorf("liveness while Entra fails: %d", status)
	}
	f.emulator.ClearFailures()
	recovered := time.Now()
	waitFor(t, "readiness after recovery", 10*time.Second, func() error {
		if p := readyProbe(t, replica); p.Status != http.StatusOK {
			return fmt.Errorf("status %d: %s", p.Status, p.Body)
		}
		return nil
	})
	t.Logf("ready %s after the endpoint recovered", time.Since(recovered).Round(time.Millisecond))
}

func TestConcurrentProbesCostOneTokenRequest(t *testing.T) {
	f := newFleet(t)
	f.emulator.SetResponseDelay(300 * time.Millisecond)
	replica := startOpsReplica(t, f, "", false)
	var wg sync.WaitGroup
	statuses := make([]int, 100)
	for i := range statuses {
		wg.Go(func() { statuses[i] = readyProbe(t, replica).Status })
	}
	wg.Wait()
	for i, status := range statuses {
		if status != http.StatusOK {
			t.Fatalf("probe %d: status %d", i, status)
		}
	}
	n := f.emulator.TokenRequests()
	t.Logf("100 concurrent probes: %d token request(s)", n)
	if n != 1 {
		t.Errorf("%d token requests, want 1", n)
	}
}

func TestAdminAPIRefreshAndPurgeAcrossReplicas(t *testing.T) {
	f := newFleet(t)
	a := startOpsReplica(t, f, "", true) // admin on a Unix socket
	b := startOpsReplica(t, f, "", false)
	var bodies []string
	first := tokenVia(t, a.sidecar, f.upstream, "/orders/a")
	if got := tokenVia(t, b.sidecar, f.upstream, "/orders/b"); got != first || f.emulator.TokenRequests() != 1 {
		t.Fatalf("the replicas do not share one token")
	}

	_, body := a.adminCall(t, &bodies, http.MethodGet, "/entra/tokens", http.StatusOK)
	var list []map[string]any
	if err := json.Unmarshal([]byte(body), &list); err != nil || len(list) != 1 {
		t.Fatalf("GET /entra/tokens: %v: %s", err, body)
	}
	entry := list[0]
	identity, _ := entry["identity"].(map[string]any)
	claims, _ := entry["claims"].(map[string]any)
	if entry["applicationName"] != "orders-api" || entry["scope"] != testScope || entry["source"] != "fetched" ||
		entry["fingerprint"] == nil || entry["recordKey"] == nil || entry["nextRefreshAt"] == nil ||
		identity["client_id"] != testClientID || identity["credential"] != "client_secret" ||
		claims["aud"] != "api://orders" || claims["appid"] != testClientID {
		t.Errorf("entry: %s", body)
	}
	_, body = b.adminCall(t, &bodies, http.MethodGet, "/entra/tokens/orders-api", http.StatusOK)
	var onB map[string]any
	_ = json.Unmarshal([]byte(body), &onB)
	if onB["source"] != "store" || onB["fingerprint"] != entry["fingerprint"] {
		t.Errorf("replica B: %s, want the store's token with A's fingerprint", body)
	}

	// Refresh on A: B injects the new token within a second, without a
	// token request of its own. A second refresh, sent at once (within the
	// second from the first one's start: waiting for B first could take
	// that second), shares the first one's request.
	a.adminCall(t, &bodies, http.MethodPost, "/entra/tokens/orders-api/refresh", http.StatusOK)
	refreshedAt := time.Now()
	a.adminCall(t, &bodies, http.MethodPost, "/entra/tokens/orders-api/refresh", http.StatusOK)
	var second string
	for {
		second = tokenVia(t, b.sidecar, f.upstream, "/orders/c")
		if second != first {
			break
		}
		if time.Since(refreshedAt) > time.Second {
			t.Fatal("replica B still injects the old token 1s after the refresh on A")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("replica B injected the refreshed token %s after the refresh call returned", time.Since(refreshedAt).Round(time.Millisecond))
	if got := tokenVia(t, a.sidecar, f.upstream, "/orders/d"); got != second {
		t.Error("replica A injects another token than B after the refresh")
	}
	if n := f.emulator.TokenRequests(); n != 2 {
		t.Errorf("%d token requests, want 2: two refreshes within a second share one", n)
	}

	// Purge on A: B's next request carries a fresh token.
	_, body = a.adminCall(t, &bodies, http.MethodDelete, "/entra/tokens/orders-api", http.StatusOK)
	if strings.Contains(body, `"fingerprint"`) {
		t.Errorf("after purge A still shows a token: %s", body)
	}
	if len(f.records(t)) != 0 {
		t.Error("the record is still in redis after the purge")
	}
	purgedAt := time.Now()
	var third string
	for {
		third = tokenVia(t, b.sidecar, f.upstream, "/orders/e")
		if third != second {
			break
		}
		if time.Since(purgedAt) > time.Second {
			t.Fatal("replica B still injects the purged token 1s after the purge on A")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := f.emulator.TokenRequests(); n != 3 {
		t.Errorf("%d token requests, want 3: one fresh token after the purge", n)
	}

	_, body = a.adminCall(t, &bodies, http.MethodGet, "/entra/tokens/nope", http.StatusNotFound)
	if !strings.Contains(body, "MICROSOFT_APPLICATION_NOT_FOUND") {
		t.Errorf("unknown application: %s", body)
	}
	a.adminCall(t, &bodies, http.MethodPost, "/entra/tokens/nope/refresh", http.StatusNotFound)

	// A refresh inside the backoff window is refused without a token request.
	f.emulator.FailNext(1, entratest.Failure{Status: http.StatusTooManyRequests, RetryAfter: "30"})
	time.Sleep(time.Second) // past the coalescing second of the last refresh
	a.adminCall(t, &bodies, http.MethodPost, "/entra/tokens/orders-api/refresh", http.StatusServiceUnavailable)
	time.Sleep(time.Second)
	header, _ := a.adminCall(t, &bodies, http.MethodPost, "/entra/tokens/orders-api/refresh", http.StatusTooManyRequests)
	if ra, err := strconv.Atoi(header.Get("Retry-After")); err != nil || ra < 20 || ra > 30 {
		t.Errorf("Retry-After %q, want the backoff's", header.Get("Retry-After"))
	}
	if n := f.emulator.TokenRequests(); n != 4 {
		t.Errorf("%d token requests, want 4: none while backed off", n)
	}
	_, body = b.adminCall(t, &bodies, http.MethodGet, "/entra/tokens", http.StatusOK)

	all := strings.Join(bodies, "\n")
	assertNoSecrets(t, all+a.logs()+b.logs(), first, second, third)
}
