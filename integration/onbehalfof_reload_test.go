package integration

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestReloadKeepsOnBehalfOfExchangesAndLeaksNothing: the real Caddy, users'
// tokens shared through a sealed Redis. A reload that keeps the
// on-behalf-of application keeps its memory: the user's next request is a
// hit, neither an exchange nor a read of Redis. Reloads that switch its
// scope and back make an exchanger each, and the ones left behind stop
// their watchers: no goroutine piles up. The requests go to the token
// endpoint, not through reverse_proxy, whose transport Caddy leaves to
// close its idle connections itself (2 minutes).
func TestReloadKeepsOnBehalfOfExchangesAndLeaksNothing(t *testing.T) {
	f := newFleet(t)
	config := operatorConfig(testIdentity+`
		redis {env.TEST_REDIS_URL} {
			key_prefix `+testKeyPrefix+`
			encryption_key {env.TEST_REDIS_KEY}
		}
		application graph-as-user {
			scope `+oboScope+`
			on_behalf_of
		}`, "")
	otherScope := strings.Replace(config, oboScope, "https://graph.microsoft.com/Mail.Read", 1)
	replica := startSidecar(t, config, append(operatorEnv(f), "TEST_REDIS_KEY="+oboEncryptionKey)...)
	assertion := oboUser(t, f.emulator, "0a0a0a0a-0000-4000-8000-00000000000a", "", 0)
	body, _ := json.Marshal(map[string]string{"applicationName": "graph-as-user", "assertion": assertion})
	request := func(when string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, replica.URL+"/token", strings.NewReader(string(body)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Identity-Header", testIdentityHeader)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d, want the user's token", when, resp.StatusCode)
		}
	}
	hits := func() float64 {
		return metricValue(t, scrapeMetrics(t, replica), `caddy_entra_on_behalf_of_total{application="graph-as-user",result="hit"}`)
	}
	request("before the reload")
	mustReload(t, replica, config)
	before := hits()
	request("after the reload")
	if got := hits() - before; got != 1 || f.emulator.OnBehalfOfRequests() != 1 {
		t.Errorf("after a reload: %v hits, %d exchanges in all; want 1 hit (the exchanged token kept in memory), 1 exchange",
			got, f.emulator.OnBehalfOfRequests())
	}

	baseline := goroutines(t, replica)
	for range 10 {
		mustReload(t, replica, otherScope)
		request("with the other scope")
		mustReload(t, replica, config)
		request("with the scope again")
	}
	var now int
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if now = goroutines(t, replica); now <= baseline+5 {
			break
		}
	}
	if now > baseline+5 {
		t.Errorf("%d goroutines after 20 reloads switching the scope, %d before:\n%s", now, baseline,
			send(t, replica.AdminURL+"/debug/pprof/goroutine?debug=1", nil).Body)
	}
	t.Logf("goroutines: %d before, %d after 20 reloads; %d exchanges", baseline, now, f.emulator.OnBehalfOfRequests())
}
