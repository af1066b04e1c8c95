package integration

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/entra/entratest"
)

// The reloads an operator makes that docs/operations.md "Reloads" does not
// test: each loads a changed Caddyfile through the admin API's /load (the
// adapter, then caddy.Load, as `caddy reload` does) into a running replica.

// operatorEnv is the fleet's environment plus the token endpoint's secret.
func operatorEnv(f *fleet) []string {
	return append(f.env(testClientSecret), "TEST_IDENTITY_HEADER="+testIdentityHeader)
}

// operatorConfig is a replica's Caddyfile template: the entra block holds
// entraBlock (lines; must not contain '%'); /<app>/* injects app's token for
// each of routes, /token is entra_token_endpoint record (endpointApps, or
// every application when empty), /ready is entra_ready (every application).
// It listens through handoff, as docs/handoff.md advises for reloads: a
// request sent as a reload ends meets no connection closed unanswered.
func operatorConfig(entraBlock string, endpointApps string, routes ...string) string {
	var b strings.Builder
	b.WriteString("{\n\tadmin 127.0.0.1:%[2]d\n\tdebug\n\thandoff\n\tentra {\n")
	for _, line := range strings.Split(strings.TrimSpace(entraBlock), "\n") {
		b.WriteString("\t\t" + strings.TrimSpace(line) + "\n")
	}
	b.WriteString("\t}\n}\n\n:%[1]d {\n\tbind handoff/127.0.0.1\n")
	for _, app := range routes {
		b.WriteString("\thandle_path /" + app + "/* {\n\t\tentra_token " + app + "\n\t\treverse_proxy {$TEST_UPSTREAM}\n\t}\n")
	}
	b.WriteString("\thandle /token {\n\t\tentra_token_endpoint record {\n\t\t\tsecret {env.TEST_IDENTITY_HEADER}\n")
	if endpointApps != "" {
		b.WriteString("\t\t\tapplication " + endpointApps + "\n")
	}
	b.WriteString("\t\t}\n\t}\n\thandle /ready {\n\t\tentra_ready\n\t}\n\trespond 404\n}\n")
	return b.String()
}

// memoryIdentity is the entra block of an in-memory replica, without
// applications.
const memoryIdentity = testIdentity

// redisStore is a redis block sharing through the fleet's Redis.
const redisStore = `
		redis {env.TEST_REDIS_URL} {
			key_prefix ` + testKeyPrefix + `
			insecure_plaintext
		}`

// reload loads template (with the replica's ports) through the admin API,
// even when its text is the running one's, and returns the answer.
func reload(t *testing.T, replica *sidecar, template string) (int, string) {
	t.Helper()
	status, body, err := postLoad(replica.AdminURL, fmt.Sprintf(template, portOf(t, replica.URL), portOf(t, replica.AdminURL)))
	if err != nil {
		t.Fatal(err)
	}
	return status, body
}

// mustReload is reload, failing the test unless the config loads.
func mustReload(t *testing.T, replica *sidecar, template string) {
	t.Helper()
	if status, body := reload(t, replica, template); status != http.StatusOK {
		t.Fatalf("reload: %d %s\nlogs:\n%s", status, body, replica.logs())
	}
}

// endpointAnswer is what /token answered for an application.
type endpointAnswer struct {
	Status     int
	RetryAfter string
	Code       string `json:"code"`
	Token      string `json:"accessToken"`
	Scope      string `json:"scope"`
}

// fromEndpoint asks the replica's entra_token_endpoint for application's record.
func fromEndpoint(t *testing.T, replica *sidecar, application string) endpointAnswer {
	t.Helper()
	a, err := tryEndpoint(replica, application)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// tryEndpoint is fromEndpoint for a goroutine of the test, returning what
// sending failed with (Caddy's listener swap at a reload may close a
// connection before any response).
func tryEndpoint(replica *sidecar, application string) (endpointAnswer, error) {
	req, _ := http.NewRequest(http.MethodGet, replica.URL+"/token?applicationName="+application, nil)
	req.Header.Set("X-Identity-Header", testIdentityHeader)
	client := &http.Client{Timeout: 15 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return endpointAnswer{}, err
	}
	defer resp.Body.Close()
	var a endpointAnswer
	_ = json.NewDecoder(resp.Body).Decode(&a)
	a.Status, a.RetryAfter = resp.StatusCode, resp.Header.Get("Retry-After")
	return a, nil
}

// audienceOf is the audience of an emulator-issued token.
func audienceOf(t *testing.T, e *entratest.Emulator, token string) string {
	t.Helper()
	claims, err := e.Verify(token)
	if err != nil {
		t.Fatalf("a token the emulator did not issue: %v", err)
	}
	return claims.Audience
}

// goroutines is the replica's goroutine count (the admin API's pprof).
func goroutines(t *testing.T, replica *sidecar) int {
	t.Helper()
	resp := send(t, replica.AdminURL+"/debug/pprof/goroutine?debug=1", nil)
	m := regexp.MustCompile(`goroutine profile: total (\d+)`).FindStringSubmatch(resp.Body)
	if m == nil {
		t.Fatalf("no goroutine profile: %d %.200s", resp.Status, resp.Body)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestReloadRemovingAnApplicationAnswersNotFoundAfterAndLeaksNothing: while
// clients ask entra_token_endpoint for graph-api, a reload removes graph-api
// (and its route). A request answered before the reload returned gets a
// token (or a retryable 503); every request sent after it gets 404
// MICROSOFT_APPLICATION_NOT_FOUND, nothing else. Adding it back works, and
// 10 add/remove cycles leave no goroutines behind.
func TestReloadRemovingAnApplicationAnswersNotFoundAfterAndLeaksNothing(t *testing.T) {
	for _, store := range []struct{ name, block string }{{"memory", ""}, {"redis", redisStore}} {
		t.Run(store.name, func(t *testing.T) {
			f := newFleet(t)
			both := operatorConfig(memoryIdentity+store.block+`
				application orders-api `+testScope+`
				application graph-api api://graph/.default`, "", "orders-api", "graph-api")
			ordersOnly := operatorConfig(memoryIdentity+store.block+`
				application orders-api `+testScope, "", "orders-api")
			replica := startSidecar(t, both, operatorEnv(f)...)
			if a := fromEndpoint(t, replica, "graph-api"); a.Status != http.StatusOK {
				t.Fatalf("graph-api before the reload: %+v", a)
			}
			tokenVia(t, replica, f.upstream, "/graph-api/a")

			type outcome struct {
				sentAfter bool
				answer    endpointAnswer
			}
			var mu sync.Mutex
			var reloaded bool
			var outcomes []outcome
			lost := 0
			traffic := startLoad(t, 4, func(int) {
				mu.Lock()
				after := reloaded
				mu.Unlock()
				a, err := tryEndpoint(replica, "graph-api")
				a.Token = ""
				mu.Lock()
				if err != nil {
					lost++
				} else {
					outcomes = append(outcomes, outcome{after, a})
				}
				mu.Unlock()
			})
			traffic.awaitMore(t, 20) // before the reload
			mustReload(t, replica, ordersOnly)
			mu.Lock()
			reloaded = true
			mu.Unlock()
			traffic.awaitMore(t, 40) // after it
			traffic.stop()
			if lost > 10 {
				t.Errorf("%d requests lost their connection, want at most 10", lost)
			}
			after := 0
			for _, o := range outcomes {
				a := o.answer
				switch {
				case o.sentAfter && (a.Status != http.StatusNotFound || a.Code != "MICROSOFT_APPLICATION_NOT_FOUND"):
					t.Errorf("a request sent after the reload got %d %q, want 404 MICROSOFT_APPLICATION_NOT_FOUND", a.Status, a.Code)
				case !o.sentAfter && a.Status != http.StatusOK && a.Code != "MICROSOFT_APPLICATION_NOT_FOUND" &&
					(a.Status != http.StatusServiceUnavailable || a.RetryAfter == ""):
					t.Errorf("a request in flight during the reload got %d %q, want a token, a retryable 503 or a 404", a.Status, a.Code)
				}
				if o.sentAfter {
					after++
				}
			}
			if after == 0 {
				t.Fatal("no request was sent after the reload")
			}
			if status, _ := get(t, replica.URL+"/graph-api/b", nil); status != http.StatusNotFound {
				t.Errorf("the removed route answered %d, want the site's 404", status)
			}
			tokenVia(t, replica, f.upstream, "/orders-api/c")

			// Add it back, then cycle, each config with its own cache (another
			// refresh_window) so that each makes token requests: the goroutine
			// count settles where it was. The requests go to the token
			// endpoint handler, not through reverse_proxy, whose transport
			// Caddy leaves to close its idle connections itself (2 minutes).
			ordersOnly = strings.Replace(ordersOnly, "\t\tapplication orders-api", "\t\trefresh_window 2m\n\t\tapplication orders-api", 1)
			mustReload(t, replica, both)
			if a := fromEndpoint(t, replica, "graph-api"); a.Status != http.StatusOK {
				t.Fatalf("graph-api, added back: %+v", a)
			}
			baseline := goroutines(t, replica)
			for range 10 {
				mustReload(t, replica, ordersOnly)
				if a := fromEndpoint(t, replica, "orders-api"); a.Status != http.StatusOK {
					t.Fatalf("orders-api: %+v", a)
				}
				mustReload(t, replica, both)
				if a := fromEndpoint(t, replica, "graph-api"); a.Status != http.StatusOK {
					t.Fatalf("graph-api: %+v", a)
				}
			}
			var now int
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
				if now = goroutines(t, replica); now <= baseline+5 {
					break
				}
			}
			if now > baseline+5 {
				t.Errorf("%d goroutines after 10 add/remove cycles, %d before:\n%s", now, baseline,
					send(t, replica.AdminURL+"/debug/pprof/goroutine?debug=1", nil).Body)
			}
			t.Logf("goroutines: %d before, %d after 10 cycles; %d token requests", baseline, now, f.emulator.TokenRequests())
		})
	}
}

// TestReloadChangingScopesInjectsTheNewScopesTokenAtOnce: a reload moves
// orders-api to another scope: the first request after it, and every one
// after, carries a token for the new scope; none gets the old scope's
// cached token.
func TestReloadChangingScopesInjectsTheNewScopesTokenAtOnce(t *testing.T) {
	for _, store := range []struct{ name, block string }{{"memory", ""}, {"redis", redisStore}} {
		t.Run(store.name, func(t *testing.T) {
			f := newFleet(t)
			config := func(scope string) string {
				return operatorConfig(memoryIdentity+store.block+"\napplication orders-api "+scope, "", "orders-api")
			}
			replica := startSidecar(t, config("api://orders/.default"), operatorEnv(f)...)
			old := tokenVia(t, replica, f.upstream, "/orders-api/a")
			if aud := audienceOf(t, f.emulator, old); aud != "api://orders" {
				t.Fatalf("audience %q before the reload", aud)
			}
			mustReload(t, replica, config("api://orders-v2/.default"))
			for i := range 20 {
				token := tokenVia(t, replica, f.upstream, fmt.Sprintf("/orders-api/b%d", i))
				if aud := audienceOf(t, f.emulator, token); aud != "api://orders-v2" {
					t.Fatalf("request %d after the reload carried a token for %q, want api://orders-v2", i, aud)
				}
			}
			if a := fromEndpoint(t, replica, "orders-api"); a.Scope != "api://orders-v2/.default" {
				t.Errorf("the endpoint's record has scope %q, want the new one", a.Scope)
			}
			// And back: the old scope's token may be reused, being for that scope.
			mustReload(t, replica, config("api://orders/.default"))
			if aud := audienceOf(t, f.emulator, tokenVia(t, replica, f.upstream, "/orders-api/c")); aud != "api://orders" {
				t.Errorf("after moving back, a token for %q", aud)
			}
		})
	}
}

// newEncryptionKey is a random encryption_key.
func newEncryptionKey() string {
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	return base64.StdEncoding.EncodeToString(raw)
}

// TestReloadSwitchingTheStore: in-memory -> redis -> in-memory, another
// key_prefix, another encryption_key (without and with the old one kept for
// reading) and an unreachable Redis: every reload loads, every request gets
// a token, the new store is used at once, and a record sealed with a key
// the new config no longer has is never accepted.
func TestReloadSwitchingTheStore(t *testing.T) {
	f := newFleet(t)
	k1, k2 := newEncryptionKey(), newEncryptionKey()
	env := append(operatorEnv(f), "TEST_K1="+k1, "TEST_K2="+k2, fmt.Sprintf("TEST_DEAD_REDIS=redis://127.0.0.1:%d/0", freePort(t)))
	config := func(store string) string {
		return operatorConfig(memoryIdentity+store+"\napplication orders-api "+testScope, "", "orders-api")
	}
	sealed := func(prefix, keys string) string {
		return "\nredis {env.TEST_REDIS_URL} {\nkey_prefix " + prefix + "\n" + keys + "\n}"
	}
	replica := startSidecar(t, config(""), env...)

	var tokens []string
	step := func(name, store string, wantRequests int64) string {
		t.Helper()
		before := f.emulator.TokenRequests()
		during := make(chan map[int]int)
		go func() { during <- hammer(t, replica.URL+"/orders-api/during", 100) }()
		mustReload(t, replica, config(store))
		// Caddy's listener swap may drop a connection; the docs allow a
		// retryable 503 when the old cache closes under a request.
		if statuses := <-during; statuses[http.StatusOK]+statuses[http.StatusServiceUnavailable]+statuses[transportError] != 100 {
			t.Errorf("%s: statuses during the reload %v, want only 200s (a retryable 503, a lost connection)", name, statuses)
		} else if statuses[transportError] > 25 {
			// Bounded as in TestReloadMakesNoTokenRequestAndAnswersNoError
			// (14 of 100 seen under -race on a loaded machine).
			t.Errorf("%s: statuses during the reload %v, want at most 25 lost connections", name, statuses)
		}
		if statuses := hammer(t, replica.URL+"/orders-api/h", 50); statuses[http.StatusOK] != 50 {
			t.Errorf("%s: statuses %v, want 50 x 200", name, statuses)
		}
		token := tokenVia(t, replica, f.upstream, "/orders-api/"+name)
		if got := f.emulator.TokenRequests() - before; got != wantRequests {
			t.Errorf("%s: %d token requests, want %d", name, got, wantRequests)
		}
		tokens = append(tokens, token)
		return token
	}
	tokenVia(t, replica, f.upstream, "/orders-api/warm")

	redisToken := step("memory-to-redis", redisStore, 1)
	if n := len(f.records(t)); n != 1 {
		t.Errorf("%d records in redis after the switch, want 1", n)
	}
	step("redis-to-memory", "", 1)
	// Back to Redis: the record is still there and valid: no request.
	if got := step("memory-to-redis-again", redisStore, 0); got != redisToken {
		t.Error("back on redis, the replica did not take the shared record")
	}
	step("other-key-prefix", sealed("itest2:", "insecure_plaintext"), 1)
	if keys, _ := f.rdb.Keys(t.Context(), "itest2:*:token").Result(); len(keys) != 1 {
		t.Errorf("records under the new key_prefix: %v, want 1", keys)
	}

	// Sealing: k1, then k2 alone (the k1 record must not be read), then
	// k1 as first key with k2 kept for reading.
	k1Token := step("sealed-k1", sealed("itest3:", "encryption_key {env.TEST_K1}"), 1)
	k2Token := step("sealed-k2-only", sealed("itest3:", "encryption_key {env.TEST_K2}"), 1)
	if k2Token == k1Token {
		t.Error("a record sealed with a key the config no longer has was accepted")
	}
	if got := step("sealed-k1-reading-k2", sealed("itest3:", "encryption_key {env.TEST_K1}\nencryption_key {env.TEST_K2}"), 0); got != k2Token {
		t.Error("a record sealed with a key kept for reading was not read")
	}

	// An unreachable Redis: the reload loads and the replica caches alone.
	step("unreachable-redis", "\nredis {env.TEST_DEAD_REDIS} {\ninsecure_plaintext\n}", 1)
	assertNoSecrets(t, replica.logs(), tokens...)
	assertNoSecretsIn(t, replica.logs(), k1, k2)
}

// TestReloadChangingWhereTokensComeFrom: a reload that changes the tenant,
// the authority host, the token endpoint or the credential type: the new
// source makes the next token request, and no token of the old source is
// injected after the reload.
func TestReloadChangingWhereTokensComeFrom(t *testing.T) {
	for _, store := range []struct{ name, block string }{{"memory", ""}, {"redis", redisStore}} {
		t.Run(store.name, func(t *testing.T) {
			f := newFleet(t)
			other, otherURL := newEmulator(t)
			other.AddClient(testClientID, testClientSecret)
			const otherTenant = "contoso-second-tenant"
			if err := f.emulator.AddTenant(otherTenant); err != nil {
				t.Fatal(err)
			}
			cert := newClientCertificate(t, t.TempDir(), "reload-cert")
			f.emulator.AddCertificateClient(testClientID, cert.Cert)
			env := append(operatorEnv(f), "TEST_OTHER_AUTHORITY="+otherURL, "TEST_OTHER_TENANT="+otherTenant,
				"TEST_OTHER_ENDPOINT="+otherURL+other.TokenPath(), "TEST_CERT="+cert.CertFile, "TEST_KEY="+cert.KeyFile)
			config := func(identity string) string {
				return operatorConfig(identity+store.block+"\napplication orders-api "+testScope, "", "orders-api")
			}
			replica := startSidecar(t, config(testIdentity), env...)
			first := tokenVia(t, replica, f.upstream, "/orders-api/a")

			// Another tenant of the same authority.
			mustReload(t, replica, config(strings.Replace(testIdentity, "{env.TEST_TENANT_ID}", "{env.TEST_OTHER_TENANT}", 1)))
			token := tokenVia(t, replica, f.upstream, "/orders-api/b")
			if claims, err := f.emulator.Verify(token); err != nil || claims.TenantID != otherTenant {
				t.Errorf("after the tenant changed, a token of tenant %v (%v), want %s", claims, err, otherTenant)
			}

			// Another authority host, then another token endpoint: the old
			// authority's token is never injected.
			before := other.TokenRequests()
			mustReload(t, replica, config(strings.Replace(testIdentity, "{env.TEST_AUTHORITY_HOST}", "{env.TEST_OTHER_AUTHORITY}", 1)))
			if _, err := other.Verify(tokenVia(t, replica, f.upstream, "/orders-api/c")); err != nil {
				t.Errorf("after the authority host changed, a token the new authority did not issue: %v", err)
			}
			mustReload(t, replica, config(testIdentity))
			if token := tokenVia(t, replica, f.upstream, "/orders-api/d"); token != first {
				if _, err := f.emulator.Verify(token); err != nil {
					t.Errorf("back on the first authority, a token it did not issue: %v", err)
				}
			}
			mustReload(t, replica, config(testIdentity+"\ntoken_endpoint {env.TEST_OTHER_ENDPOINT}"))
			if _, err := other.Verify(tokenVia(t, replica, f.upstream, "/orders-api/e")); err != nil {
				t.Errorf("after token_endpoint changed, a token the new endpoint did not issue: %v", err)
			}
			if got := other.TokenRequests() - before; got != 1 {
				t.Errorf("the new authority got %d token requests, want 1 (its token kept across)", got)
			}

			// client_secret -> client_certificate: the next token request
			// (the running token dropped by a 401) is signed with the key.
			mustReload(t, replica, config(strings.Replace(testIdentity, "client_secret  {env.TEST_CLIENT_SECRET}",
				"client_certificate {env.TEST_CERT} {env.TEST_KEY}", 1)))
			current := tokenVia(t, replica, f.upstream, "/orders-api/f")
			f.upstream.refuse(current)
			get(t, replica.URL+"/orders-api/g", nil)
			assertions := f.emulator.AssertionsAccepted()
			token = tokenVia(t, replica, f.upstream, "/orders-api/h")
			claims, err := f.emulator.Verify(token)
			if err != nil || claims.AppIDACR != "2" {
				t.Errorf("after the credential became a certificate, a token with appidacr %+v (%v), want 2", claims, err)
			}
			if f.emulator.AssertionsAccepted() == assertions {
				t.Error("no token request was signed with the certificate")
			}
		})
	}
}

// TestInvalidReloadKeepsServingAndNamesTheField: a reload with a secret
// placeholder that resolves to nothing, or with an unknown directive, is
// refused with an error naming the field; the running config keeps serving
// its token, with no token request.
func TestInvalidReloadKeepsServingAndNamesTheField(t *testing.T) {
	f := newFleet(t)
	good := operatorConfig(testIdentity+"\napplication orders-api "+testScope, "", "orders-api")
	const badEncryptionKey = "not-base64-key-Do-Not-Echo-3e7a"
	replica := startSidecar(t, good, append(operatorEnv(f), "TEST_BAD_KEY="+badEncryptionKey)...)
	token := tokenVia(t, replica, f.upstream, "/orders-api/a")
	for _, tc := range []struct{ name, config, field string }{
		{"empty env secret", strings.Replace(good, "{env.TEST_CLIENT_SECRET}", "{env.TEST_NO_SUCH_SECRET}", 1), "client_secret"},
		{"missing secret file", strings.Replace(good, "{env.TEST_CLIENT_SECRET}", "{file./nonexistent/entra-secret}", 1), "client_secret"},
		{"unknown directive", strings.Replace(good, "\t\tapplication orders-api", "\t\tclient_secrett x\n\t\tapplication orders-api", 1), "client_secrett"},
		{"unknown application option", strings.Replace(good, "application orders-api "+testScope, "application orders-api {\n\t\t\tscope "+testScope+"\n\t\t\tscopes x\n\t\t}", 1), "scopes"},
		{"bad encryption key", strings.Replace(good, "\t\tapplication orders-api", "\t\tredis {env.TEST_REDIS_URL} {\n\t\t\tencryption_key {env.TEST_BAD_KEY}\n\t\t}\n\t\tapplication orders-api", 1), "encryption_key"},
		{"refresh window too long", strings.Replace(good, "\t\tapplication orders-api", "\t\trefresh_window 2h\n\t\tapplication orders-api", 1), "refresh_window"},
		{"application without scope", strings.Replace(good, "application orders-api "+testScope, "application orders-api {\n\t\t}", 1), "scope"},
		{"entra_token of a removed application", operatorConfig(testIdentity+"\napplication orders-api "+testScope, "", "orders-api", "graph-api"), "graph-api"},
		{"entra_token_endpoint of a removed application", operatorConfig(testIdentity+"\napplication orders-api "+testScope, "orders-api graph-api", "orders-api"), "graph-api"},
		{"entra_ready of a removed application", strings.Replace(good, "\t\tentra_ready\n", "\t\tentra_ready orders-api graph-api\n", 1), "graph-api"},
		{"redis url scheme", strings.Replace(good, "\t\tapplication orders-api", "\t\tredis http://127.0.0.1:1 {\n\t\t\tinsecure_plaintext\n\t\t}\n\t\tapplication orders-api", 1), "redis"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := reload(t, replica, tc.config)
			if status == http.StatusOK {
				t.Fatal("the invalid config loaded")
			}
			t.Logf("%d %s", status, strings.TrimSpace(body))
			if !strings.Contains(body, tc.field) {
				t.Errorf("the error does not name %s: %s", tc.field, body)
			}
			if strings.Contains(body, testClientSecret) || strings.Contains(body, badEncryptionKey) {
				t.Error("the error holds the secret")
			}
			if got := tokenVia(t, replica, f.upstream, "/orders-api/b"); got != token {
				t.Error("the running config lost its token")
			}
		})
	}
	if got := f.emulator.TokenRequests(); got != 1 {
		t.Errorf("%d token requests, want 1", got)
	}
}

// TestReloadChangingTheEndpointsAndProbesApplications: entra_token_endpoint
// and entra_ready follow the applications of the config loaded: one removed
// from the endpoint's list is 404 at once, one added is served at once, and
// entra_ready reports the new config's applications only.
func TestReloadChangingTheEndpointsAndProbesApplications(t *testing.T) {
	f := newFleet(t)
	apps := testIdentity + "\napplication orders-api " + testScope + "\napplication graph-api api://graph/.default"
	replica := startSidecar(t, operatorConfig(apps, "orders-api graph-api"), operatorEnv(f)...)
	readyApps := func() []string {
		t.Helper()
		resp := send(t, replica.URL+"/ready", nil)
		var body struct {
			Applications map[string]any `json:"applications"`
		}
		_ = json.Unmarshal([]byte(resp.Body), &body)
		var names []string
		for name := range body.Applications {
			names = append(names, name)
		}
		if resp.Status != http.StatusOK {
			t.Errorf("/ready: %d %s", resp.Status, resp.Body)
		}
		return names
	}
	if a := fromEndpoint(t, replica, "graph-api"); a.Status != http.StatusOK {
		t.Fatalf("graph-api: %+v", a)
	}
	if got := readyApps(); len(got) != 2 {
		t.Errorf("ready applications %v, want 2", got)
	}
	mustReload(t, replica, operatorConfig(apps, "orders-api"))
	if a := fromEndpoint(t, replica, "graph-api"); a.Status != http.StatusNotFound || a.Code != "MICROSOFT_APPLICATION_NOT_FOUND" {
		t.Errorf("graph-api, no longer on the endpoint: %d %q, want 404", a.Status, a.Code)
	}
	mustReload(t, replica, operatorConfig(testIdentity+"\napplication orders-api "+testScope, ""))
	if got := readyApps(); len(got) != 1 || got[0] != "orders-api" {
		t.Errorf("ready applications %v after graph-api was removed, want [orders-api]", got)
	}
	three := apps + "\napplication billing-api api://billing/.default"
	mustReload(t, replica, operatorConfig(three, ""))
	if a := fromEndpoint(t, replica, "billing-api"); a.Status != http.StatusOK || audienceOf(t, f.emulator, a.Token) != "api://billing" {
		t.Errorf("billing-api, added: %d %q", a.Status, a.Code)
	}
	if got := readyApps(); len(got) != 3 {
		t.Errorf("ready applications %v after billing-api was added, want 3", got)
	}
}

// TestMetricsSurviveReloads: across reloads that keep, change and switch
// the cache (another refresh window, Redis, an added application), the
// caddy_entra_* series are registered once, no counter goes backwards and
// no load logs a registration error.
func TestMetricsSurviveReloads(t *testing.T) {
	f := newFleet(t)
	base := testIdentity + "\napplication orders-api " + testScope
	configs := []string{
		operatorConfig(base, "", "orders-api"),
		operatorConfig(base+"\nrefresh_window 2m", "", "orders-api"),
		operatorConfig(base+redisStore, "", "orders-api"),
		operatorConfig(base+redisStore+"\napplication graph-api api://graph/.default", "", "orders-api", "graph-api"),
		operatorConfig(base, "", "orders-api"),
	}
	replica := startSidecar(t, configs[0], operatorEnv(f)...)
	counters := func() map[string]float64 {
		t.Helper()
		values := map[string]float64{}
		for _, line := range metricLines(scrapeMetrics(t, replica), "caddy_entra_") {
			series, value, _ := strings.Cut(line, " ")
			if _, dup := values[series]; dup {
				t.Errorf("series %s appears twice", series)
			}
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				t.Fatalf("metric line %q", line)
			}
			values[series] = v
		}
		return values
	}
	previous := map[string]float64{}
	for i, config := range append(configs, configs...) {
		if i > 0 {
			mustReload(t, replica, config)
		}
		if statuses := hammer(t, replica.URL+"/orders-api/m", 20); statuses[http.StatusOK] != 20 {
			t.Errorf("load %d: statuses %v", i, statuses)
		}
		if a := fromEndpoint(t, replica, "orders-api"); a.Status != http.StatusOK {
			t.Errorf("load %d: the endpoint answered %d", i, a.Status)
		}
		send(t, replica.URL+"/token?applicationName=orders-api", http.Header{"X-Identity-Header": {"wrong-identity-header-value"}})
		now := counters()
		for series, before := range previous {
			if strings.Contains(series, "_total") || strings.Contains(series, "_count") || strings.Contains(series, "_sum") {
				if after, ok := now[series]; !ok || after < before {
					t.Errorf("load %d: %s went from %v to %v (present %v)", i, series, before, after, ok)
				}
			}
		}
		previous = now
	}
	for series, v := range previous {
		if strings.HasPrefix(series, "caddy_entra_endpoint_") {
			t.Logf("%s %v", series, v)
		}
	}
	if previous[`caddy_entra_requests_total{application="orders-api",result="injected"}`] != 200 {
		t.Errorf("injected requests %v, want 200", previous[`caddy_entra_requests_total{application="orders-api",result="injected"}`])
	}
	if strings.Contains(replica.logs(), "registering metrics") || strings.Contains(replica.logs(), "duplicate metrics collector") {
		t.Errorf("a load logged a metrics registration error:\n%s", replica.logs())
	}
}

// issuedFor counts the tokens the emulator issues, by resource.
func issuedFor(e *entratest.Emulator) func(resource string) int {
	var mu sync.Mutex
	counts := map[string]int{}
	e.OnIssue(func(i entratest.Issued) {
		mu.Lock()
		counts[i.Resource]++
		mu.Unlock()
	})
	return func(resource string) int {
		mu.Lock()
		defer mu.Unlock()
		return counts[resource]
	}
}

// TestReloadRemovingAPrefetchedApplicationStopsItsRefreshes: prefetch keeps
// graph-api's token refreshed without traffic; a reload that removes
// graph-api stops those refreshes, while orders-api's carry on.
func TestReloadRemovingAPrefetchedApplicationStopsItsRefreshes(t *testing.T) {
	for _, store := range []struct{ name, block string }{{"memory", ""}, {"redis", redisStore}} {
		t.Run(store.name, func(t *testing.T) {
			f := newFleet(t)
			f.emulator.SetTokenLifetime(4 * time.Second) // refreshed ~2s after each fetch
			issued := issuedFor(f.emulator)
			base := memoryIdentity + store.block + "\nrefresh_window 1s\nprefetch\napplication orders-api " + testScope
			replica := startSidecar(t, operatorConfig(base+"\napplication graph-api api://graph/.default", ""), operatorEnv(f)...)
			waitFor(t, "graph-api's prefetch to refresh", 20*time.Second, func() error {
				if n := issued("api://graph"); n < 2 {
					return fmt.Errorf("%d graph-api tokens", n)
				}
				return nil
			})
			// (Turning prefetch off does not stop them: a token held is
			// refreshed before it expires with or without prefetch, as
			// docs/entra.md says.)
			for _, tc := range []struct{ name, config string }{
				{"removed", operatorConfig(base, "")},
			} {
				mustReload(t, replica, operatorConfig(base+"\napplication graph-api api://graph/.default", ""))
				mustReload(t, replica, tc.config)
				graph, orders := issued("api://graph"), issued("api://orders")
				waitFor(t, "two refreshes of orders-api", 20*time.Second, func() error {
					if n := issued("api://orders") - orders; n < 2 {
						return fmt.Errorf("%d orders-api refreshes", n)
					}
					return nil
				})
				if n := issued("api://graph") - graph; n > 1 { // one may have been on its way
					t.Errorf("%s: graph-api was refreshed %d times after the reload, want none", tc.name, n)
				}
			}
		})
	}
}

// TestReloadRemovingAnApplicationWhileItsTokenRequestRuns: graph-api's
// first token request is slow; a reload removes graph-api under it: the
// request in flight gets its token or a retryable 503, the next one 404.
func TestReloadRemovingAnApplicationWhileItsTokenRequestRuns(t *testing.T) {
	f := newFleet(t)
	base := memoryIdentity + "\napplication orders-api " + testScope
	replica := startSidecar(t, operatorConfig(base+"\napplication graph-api api://graph/.default", ""), operatorEnv(f)...)
	fromEndpoint(t, replica, "orders-api")
	f.emulator.SetResponseDelay(2 * time.Second)
	inFlight := make(chan endpointAnswer, 1)
	go func() {
		a, err := tryEndpoint(replica, "graph-api")
		if err != nil {
			a.Code = err.Error()
		}
		inFlight <- a
	}()
	waitFor(t, "graph-api's token request", 10*time.Second, func() error {
		if f.emulator.TokenRequests() < 2 {
			return fmt.Errorf("no token request yet")
		}
		return nil
	})
	mustReload(t, replica, operatorConfig(base, ""))
	if a := fromEndpoint(t, replica, "graph-api"); a.Status != http.StatusNotFound || a.Code != "MICROSOFT_APPLICATION_NOT_FOUND" {
		t.Errorf("after the reload: %d %q, want 404 MICROSOFT_APPLICATION_NOT_FOUND", a.Status, a.Code)
	}
	a := <-inFlight
	if a.Status != http.StatusOK && (a.Status != http.StatusServiceUnavailable || a.RetryAfter == "") {
		t.Errorf("the request in flight got %d %q, want a token or a retryable 503", a.Status, a.Code)
	}
	f.emulator.SetResponseDelay(0)
	if a := fromEndpoint(t, replica, "orders-api"); a.Status != http.StatusOK {
		t.Errorf("orders-api after the reload: %+v", a)
	}
}

// TestFailingReloadsWithOtherCacheSettingsLeakNothing: configs that would
// make a cache of their own (another refresh window, Redis) and then fail
// to load (a route naming an application not configured) leave no
// goroutine and no Redis connection behind, and the running config keeps
// its token.
func TestFailingReloadsWithOtherCacheSettingsLeakNothing(t *testing.T) {
	f := newFleet(t)
	good := operatorConfig(memoryIdentity+"\napplication orders-api "+testScope, "", "orders-api")
	replica := startSidecar(t, good, operatorEnv(f)...)
	token := tokenVia(t, replica, f.upstream, "/orders-api/a")
	bad := operatorConfig(memoryIdentity+redisStore+"\nrefresh_window 2m\napplication orders-api "+testScope, "", "orders-api", "missing-api")
	clients := func() int {
		list, err := f.rdb.ClientList(t.Context()).Result()
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(list, "\n") - 1 // the test's own connection
	}
	if status, body := reload(t, replica, bad); status == http.StatusOK || !strings.Contains(body, "missing-api") {
		t.Fatalf("the config naming missing-api: %d %s", status, body)
	}
	baseline := goroutines(t, replica)
	for range 10 {
		if status, _ := reload(t, replica, bad); status == http.StatusOK {
			t.Fatal("the bad config loaded")
		}
	}
	var now, conns int
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if now, conns = goroutines(t, replica), clients(); now <= baseline+3 && conns == 0 {
			break
		}
	}
	if now > baseline+3 {
		t.Errorf("%d goroutines after 10 failing reloads, %d before", now, baseline)
	}
	if conns != 0 {
		t.Errorf("%d redis connections left by configs that failed to load", conns)
	}
	if got := tokenVia(t, replica, f.upstream, "/orders-api/b"); got != token {
		t.Error("the running config lost its token")
	}
}

// TestReloadWithoutTheEntraAppAndBack: a config without the entra app
// replaces one with it: the admin API says no app is running (not the old
// one's tokens), the store gauge reads no stale store, and loading the
// entra config again serves tokens.
func TestReloadWithoutTheEntraAppAndBack(t *testing.T) {
	f := newFleet(t)
	env := append(operatorEnv(f), fmt.Sprintf("TEST_DEAD_REDIS=redis://127.0.0.1:%d/0", freePort(t)))
	dead := operatorConfig(memoryIdentity+"\nredis {env.TEST_DEAD_REDIS} {\ninsecure_plaintext\n}\napplication orders-api "+testScope, "", "orders-api")
	replica := startSidecar(t, dead, env...)
	tokenVia(t, replica, f.upstream, "/orders-api/a")
	if text := scrapeMetrics(t, replica); !strings.Contains(text, "caddy_entra_store_available 0\n") {
		t.Errorf("with redis unreachable, store_available is not 0")
	}
	// To memory: the gauge is the new store's.
	mustReload(t, replica, operatorConfig(memoryIdentity+"\napplication orders-api "+testScope, "", "orders-api"))
	tokenVia(t, replica, f.upstream, "/orders-api/b")
	if text := scrapeMetrics(t, replica); !strings.Contains(text, "caddy_entra_store_available 1\n") {
		t.Errorf("after moving to the in-memory store, store_available is not 1:\n%s",
			strings.Join(metricLines(text, "caddy_entra_store"), "\n"))
	}
	noEntra := "{\n\tadmin 127.0.0.1:%[2]d\n\thandoff\n}\n:%[1]d {\n\tbind handoff/127.0.0.1\n\trespond \"plain\"\n}\n"
	mustReload(t, replica, noEntra)
	if resp := send(t, replica.AdminURL+"/entra/tokens", nil); resp.Status != http.StatusInternalServerError ||
		!strings.Contains(resp.Body, "MICROSOFT_PROVIDER_NOT_CONFIGURED") {
		t.Errorf("admin API without the entra app: %d %s", resp.Status, resp.Body)
	}
	mustReload(t, replica, dead)
	tokenVia(t, replica, f.upstream, "/orders-api/c")
	if resp := send(t, replica.AdminURL+"/entra/tokens/orders-api", nil); resp.Status != http.StatusOK {
		t.Errorf("admin API after the entra app came back: %d %s", resp.Status, resp.Body)
	}
}

// TestReloadFromPlaintextToSealedRejectsThePlaintextRecord: a replica
// shared tokens unsealed (insecure_plaintext); a reload turns on
// encryption_key with the same key_prefix: the plaintext record, which any
// Redis writer could have written, is not accepted, and the new record is
// sealed.
func TestReloadFromPlaintextToSealedRejectsThePlaintextRecord(t *testing.T) {
	f := newFleet(t)
	env := append(operatorEnv(f), "TEST_K1="+newEncryptionKey())
	config := func(keys string) string {
		return operatorConfig(memoryIdentity+"\nredis {env.TEST_REDIS_URL} {\nkey_prefix "+testKeyPrefix+"\n"+keys+"\n}\napplication orders-api "+testScope, "", "orders-api")
	}
	replica := startSidecar(t, config("insecure_plaintext"), env...)
	plain := tokenVia(t, replica, f.upstream, "/orders-api/a")
	mustReload(t, replica, config("encryption_key {env.TEST_K1}"))
	if got := tokenVia(t, replica, f.upstream, "/orders-api/b"); got == plain {
		t.Error("the sealed config accepted the plaintext record")
	}
	if got := f.emulator.TokenRequests(); got != 2 {
		t.Errorf("%d token requests, want 2", got)
	}
	keys, _ := f.rdb.Keys(t.Context(), testKeyPrefix+"*:token").Result()
	for _, key := range keys {
		if raw, _ := f.rdb.Get(t.Context(), key).Result(); strings.Contains(raw, "accessToken") {
			t.Errorf("record %s is still plaintext after the reload", key)
		}
	}
}

// TestReloadChangingScopesUnderLoad: clients keep sending requests while a
// reload moves orders-api to another scope: every request sent after the
// reload returned carries a token for the new scope, and every request is
// answered with a token.
func TestReloadChangingScopesUnderLoad(t *testing.T) {
	for _, store := range []struct{ name, block string }{{"memory", ""}, {"redis", redisStore}} {
		t.Run(store.name, func(t *testing.T) {
			f := newFleet(t)
			config := func(scope string) string {
				return operatorConfig(memoryIdentity+store.block+"\napplication orders-api "+scope, "", "orders-api")
			}
			replica := startSidecar(t, config("api://orders/.default"), operatorEnv(f)...)
			tokenVia(t, replica, f.upstream, "/orders-api/warm")
			var mu sync.Mutex
			reloaded := false
			audiences := map[bool]map[string]int{false: {}, true: {}}
			failures := map[int]int{}
			traffic := startLoad(t, 6, func(int) {
				mu.Lock()
				after := reloaded
				mu.Unlock()
				resp, err := http.Get(replica.URL + "/orders-api/load")
				if err != nil {
					mu.Lock()
					failures[transportError]++
					mu.Unlock()
					return
				}
				var body struct{ Authorization []string }
				_ = json.NewDecoder(resp.Body).Decode(&body)
				resp.Body.Close()
				aud := ""
				if resp.StatusCode == http.StatusOK && len(body.Authorization) == 1 {
					aud = audienceOf(t, f.emulator, strings.TrimPrefix(body.Authorization[0], "Bearer "))
				}
				mu.Lock()
				if aud == "" {
					failures[resp.StatusCode]++
				} else {
					audiences[after][aud]++
				}
				mu.Unlock()
			})
			traffic.awaitMore(t, 30)
			mustReload(t, replica, config("api://orders-v2/.default"))
			mu.Lock()
			reloaded = true
			mu.Unlock()
			traffic.awaitMore(t, 60)
			traffic.stop()
			t.Logf("before the reload returned %v, after %v, failures %v", audiences[false], audiences[true], failures)
			if n := audiences[true]["api://orders"]; n > 0 {
				t.Errorf("%d requests sent after the reload carried the old scope's token", n)
			}
			if audiences[true]["api://orders-v2"] == 0 {
				t.Error("no request after the reload got a token")
			}
			for status, n := range failures {
				if status != transportError && status != http.StatusServiceUnavailable {
					t.Errorf("%d requests answered %d", n, status)
				}
			}
		})
	}
}

// TestReloadsSwitchingRedisSettingsCloseTheOldClients: 10 reloads that
// alternate key_prefix (a cache, and a Redis client, each) with requests:
// the old configs' Redis connections and goroutines are gone after them,
// and the admin API shows the running config's applications only.
func TestReloadsSwitchingRedisSettingsCloseTheOldClients(t *testing.T) {
	f := newFleet(t)
	config := func(prefix, apps string) string {
		return operatorConfig(memoryIdentity+"\nredis {env.TEST_REDIS_URL} {\nkey_prefix "+prefix+"\ninsecure_plaintext\n}\napplication orders-api "+testScope+apps, "", "orders-api")
	}
	clients := func() int {
		list, err := f.rdb.ClientList(t.Context()).Result()
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(list, "\n") - 1 // the test's own connection
	}
	replica := startSidecar(t, config("itest-a:", ""), operatorEnv(f)...)
	tokenVia(t, replica, f.upstream, "/orders-api/a")
	mustReload(t, replica, config("itest-b:", ""))
	tokenVia(t, replica, f.upstream, "/orders-api/b")
	baseConns, baseRoutines := clients(), goroutines(t, replica)
	for i := range 10 {
		prefix := []string{"itest-a:", "itest-b:"}[i%2]
		mustReload(t, replica, config(prefix, "\napplication graph-api api://graph/.default"))
		// Through the endpoint, not reverse_proxy, whose transport Caddy
		// leaves to close its idle connections itself (2 minutes).
		for _, app := range []string{"orders-api", "graph-api"} {
			if a := fromEndpoint(t, replica, app); a.Status != http.StatusOK {
				t.Errorf("reload %d: %s answered %d %s", i, app, a.Status, a.Code)
			}
		}
	}
	mustReload(t, replica, config("itest-b:", ""))
	tokenVia(t, replica, f.upstream, "/orders-api/d")
	var conns, routines int
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if conns, routines = clients(), goroutines(t, replica); conns <= baseConns && routines <= baseRoutines+5 {
			break
		}
	}
	if conns > baseConns {
		t.Errorf("%d redis connections after 12 reloads, %d before", conns, baseConns)
	}
	if routines > baseRoutines+5 {
		t.Errorf("%d goroutines after 12 reloads, %d before", routines, baseRoutines)
	}
	resp := send(t, replica.AdminURL+"/entra/tokens", nil)
	if resp.Status != http.StatusOK || strings.Contains(resp.Body, "graph-api") || !strings.Contains(resp.Body, "orders-api") {
		t.Errorf("admin API after graph-api was removed: %d %s", resp.Status, resp.Body)
	}
	if resp := send(t, replica.AdminURL+"/entra/tokens/graph-api", nil); resp.Status != http.StatusNotFound {
		t.Errorf("admin API for the removed graph-api: %d", resp.Status)
	}
	t.Logf("redis connections %d -> %d, goroutines %d -> %d", baseConns, conns, baseRoutines, routines)
}

// TestReloadFixingAWrongSecretServesAtOnce: the replica was started with a
// wrong secret, so its token requests fail (502, backed off); the operator
// writes the right secret and reloads: the next request gets a token, not
// the backed-off failure of the old secret.
func TestReloadFixingAWrongSecretServesAtOnce(t *testing.T) {
	for _, store := range []struct{ name, block string }{{"memory", ""}, {"redis", redisStore}} {
		t.Run(store.name, func(t *testing.T) {
			f := newFleet(t)
			secretFile := filepath.Join(t.TempDir(), "client_secret")
			if err := os.WriteFile(secretFile, []byte("wrong-"+testClientSecret), 0o600); err != nil {
				t.Fatal(err)
			}
			config := operatorConfig(strings.Replace(testIdentity, "{env.TEST_CLIENT_SECRET}", "{file."+secretFile+"}", 1)+
				store.block+"\napplication orders-api "+testScope, "", "orders-api")
			replica := startSidecar(t, config, operatorEnv(f)...)
			for range 3 {
				if status, body := get(t, replica.URL+"/orders-api/a", nil); status != http.StatusBadGateway {
					t.Fatalf("with a wrong secret: %d %s", status, body)
				}
			}
			if err := os.WriteFile(secretFile, []byte(testClientSecret), 0o600); err != nil {
				t.Fatal(err)
			}
			mustReload(t, replica, config)
			if status, body := get(t, replica.URL+"/orders-api/b", nil); status != http.StatusOK {
				t.Errorf("after the secret was fixed and the config reloaded: %d %s", status, body)
			}
			if a := fromEndpoint(t, replica, "orders-api"); a.Status != http.StatusOK {
				t.Errorf("the endpoint after the fix: %d %s", a.Status, a.Code)
			}
			if resp := send(t, replica.URL+"/ready", nil); resp.Status != http.StatusOK {
				t.Errorf("/ready after the fix: %d %s", resp.Status, resp.Body)
			}
		})
	}
}

// TestReloadRenamingAnApplication: a reload renames orders-api to
// orders-v2 (same identity and scope): the token carries over, and the
// record the endpoint hands out names orders-v2; the old name is 404.
func TestReloadRenamingAnApplication(t *testing.T) {
	for _, store := range []struct{ name, block string }{{"memory", ""}, {"redis", redisStore}} {
		t.Run(store.name, func(t *testing.T) {
			f := newFleet(t)
			replica := startSidecar(t, operatorConfig(memoryIdentity+store.block+"\napplication orders-api "+testScope, ""), operatorEnv(f)...)
			before := fromEndpoint(t, replica, "orders-api")
			mustReload(t, replica, operatorConfig(memoryIdentity+store.block+"\napplication orders-v2 "+testScope, ""))
			resp := send(t, replica.URL+"/token?applicationName=orders-v2", http.Header{"X-Identity-Header": {testIdentityHeader}})
			var record struct {
				ApplicationName string `json:"applicationName"`
				AccessToken     string `json:"accessToken"`
			}
			_ = json.Unmarshal([]byte(resp.Body), &record)
			if resp.Status != http.StatusOK || record.ApplicationName != "orders-v2" {
				t.Errorf("orders-v2 after the rename: %d, applicationName %q", resp.Status, record.ApplicationName)
			}
			if record.AccessToken != before.Token {
				t.Error("the token did not carry over the rename")
			}
			if a := fromEndpoint(t, replica, "orders-api"); a.Status != http.StatusNotFound {
				t.Errorf("the old name: %d", a.Status)
			}
		})
	}
}

// TestReloadAddingAPrefetchedApplicationFetchesItWithoutTraffic: a reload
// adds graph-api with prefetch on: its token is requested at once, with no
// request, and entra_ready is 200.
func TestReloadAddingAPrefetchedApplicationFetchesItWithoutTraffic(t *testing.T) {
	f := newFleet(t)
	issued := issuedFor(f.emulator)
	base := memoryIdentity + "\nprefetch\napplication orders-api " + testScope
	replica := startSidecar(t, operatorConfig(base, ""), operatorEnv(f)...)
	mustReload(t, replica, operatorConfig(base+"\napplication graph-api api://graph/.default", ""))
	waitFor(t, "graph-api's prefetch", 10*time.Second, func() error {
		if issued("api://graph") == 0 {
			return fmt.Errorf("no graph-api token yet")
		}
		return nil
	})
	if resp := send(t, replica.URL+"/ready", nil); resp.Status != http.StatusOK {
		t.Errorf("/ready: %d %s", resp.Status, resp.Body)
	}
	if n := issued("api://orders"); n != 1 {
		t.Errorf("orders-api tokens %d, want 1 (kept over the reload)", n)
	}
}

// TestReloadStormUnderLoad: 20 reloads back to back, each changing the
// cache settings (so each closes the previous cache under its requests)
// and the applications, while clients use orders-api through entra_token
// and the endpoint: every answer is a token or a retryable 503, none a
// 404, 500 or 502.
func TestReloadStormUnderLoad(t *testing.T) {
	for _, store := range []struct{ name, block string }{{"memory", ""}, {"redis", redisStore}} {
		t.Run(store.name, func(t *testing.T) {
			f := newFleet(t)
			configs := []string{
				operatorConfig(memoryIdentity+store.block+"\napplication orders-api "+testScope, "", "orders-api"),
				operatorConfig(memoryIdentity+store.block+"\nrefresh_window 2m\napplication orders-api "+testScope+"\napplication graph-api api://graph/.default", "", "orders-api", "graph-api"),
				operatorConfig(memoryIdentity+store.block+"\nwait_timeout 3s\napplication orders-api "+testScope, "orders-api", "orders-api"),
			}
			replica := startSidecar(t, configs[0], operatorEnv(f)...)
			tokenVia(t, replica, f.upstream, "/orders-api/warm")
			var mu sync.Mutex
			answers := map[string]int{}
			traffic := startLoad(t, 6, func(worker int) {
				req, _ := http.NewRequest(http.MethodGet, replica.URL+"/orders-api/storm", nil)
				if worker%2 == 1 {
					req, _ = http.NewRequest(http.MethodGet, replica.URL+"/token?applicationName=orders-api", nil)
					req.Header.Set("X-Identity-Header", testIdentityHeader)
				}
				answer := "no response"
				if resp, err := http.DefaultClient.Do(req); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					answer = strconv.Itoa(resp.StatusCode)
					if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") == "" {
						answer += " without Retry-After"
					}
				}
				mu.Lock()
				answers[answer]++
				mu.Unlock()
			})
			for i := range 20 {
				mustReload(t, replica, configs[(i+1)%len(configs)])
			}
			traffic.awaitMore(t, 12)
			traffic.stop()
			t.Logf("answers over 20 reloads: %v; %d token requests", answers, f.emulator.TokenRequests())
			for answer, n := range answers {
				if answer != "200" && answer != "503" && answer != "no response" {
					t.Errorf("%d answers %s, want only tokens and retryable 503s", n, answer)
				}
			}
			if answers["no response"] > 20 {
				t.Errorf("%d requests lost their connection", answers["no response"])
			}
		})
	}
}
