package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// securityCaddyfile puts entra_token in the places where the rest of the
// server could see or remove the token: a deferred header operation and
// respond reading {http.request.header.Authorization}, an error route that
// proxies elsewhere, and a request_header that removes the token.
const securityCaddyfile = sidecarGlobalOptions + `
:%[1]d {
	bind 127.0.0.1
	handle_path /orders/* {
		entra_token orders-api
		reverse_proxy {$TEST_UPSTREAM}
	}
	handle_path /reflect/* {
		header X-Seen-Authorization "{http.request.header.Authorization}" {
			defer
		}
		entra_token orders-api
		reverse_proxy {$TEST_UPSTREAM}
	}
	handle_path /respond/* {
		route {
			entra_token orders-api
			respond "seen: {http.request.header.Authorization}"
		}
	}
	handle_path /broken/* {
		entra_token orders-api
		reverse_proxy {$TEST_DEAD_UPSTREAM}
	}
	handle_path /stripped/* {
		route {
			entra_token orders-api
			request_header -Authorization
			reverse_proxy {$TEST_UPSTREAM}
		}
	}
	handle_errors {
		reverse_proxy {$TEST_ERROR_UPSTREAM}
	}
}
`

// strictUpstream is an API that answers 401 to a request without a bearer
// token, and records each request's headers and trailers.
type strictUpstream struct {
	server   *httptest.Server
	mu       sync.Mutex
	headers  []http.Header
	trailers []http.Header
}

func newStrictUpstream(t *testing.T) *strictUpstream {
	t.Helper()
	u := &strictUpstream{}
	u.server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // trailers arrive at the body's end
		u.mu.Lock()
		u.headers = append(u.headers, r.Header.Clone())
		u.trailers = append(u.trailers, r.Trailer.Clone())
		u.mu.Unlock()
		if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ey") {
			w.WriteHeader(http.StatusUnauthorized)
		}
		fmt.Fprintln(w, "upstream")
	}))
	t.Cleanup(u.server.Close)
	return u
}

// last returns the headers and trailers of the last request, and how many
// requests came.
func (u *strictUpstream) last() (header, trailer http.Header, count int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.headers) == 0 {
		return nil, nil, 0
	}
	return u.headers[len(u.headers)-1], u.trailers[len(u.trailers)-1], len(u.headers)
}

// securityReplica starts one replica on securityCaddyfile.
func securityReplica(t *testing.T) (*fleet, *sidecar, *strictUpstream, *strictUpstream) {
	t.Helper()
	f := newFleet(t)
	api, errorRoute := newStrictUpstream(t), newStrictUpstream(t)
	env := append(f.env(testClientSecret),
		"TEST_UPSTREAM="+api.server.URL,
		"TEST_ERROR_UPSTREAM="+errorRoute.server.URL,
		fmt.Sprintf("TEST_DEAD_UPSTREAM=127.0.0.1:%d", freePort(t)))
	return f, startSidecar(t, securityCaddyfile, env...), api, errorRoute
}

// rawExchange sends raw bytes on a new connection to replica and reads the
// response, for requests a Go client would not send as written.
func rawExchange(t *testing.T, replica *sidecar, raw string) (int, string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(replica.URL, "http://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestTokenNeverReachesTheRestOfTheServer: placeholders, deferred header
// operations, respond and error routes see what the client sent, never the
// injected token (issue 9, item 3).
func TestTokenNeverReachesTheRestOfTheServer(t *testing.T) {
	f, replica, api, errorRoute := securityReplica(t)
	client := http.Header{"Authorization": {"Bearer client-own"}}

	resp := send(t, replica.URL+"/reflect/a", client)
	if resp.Status != http.StatusOK {
		t.Fatalf("reflect: status %d: %s", resp.Status, resp.Body)
	}
	header, _, _ := api.last()
	token := strings.TrimPrefix(header.Get("Authorization"), "Bearer ")
	if _, err := f.emulator.Verify(token); err != nil {
		t.Fatalf("the upstream did not get an issued token: %v", err)
	}
	if got := resp.Header.Get("X-Seen-Authorization"); got != "Bearer client-own" {
		t.Errorf("a deferred header operation read Authorization %q, want the client's own", shorten(got))
	}

	resp = send(t, replica.URL+"/respond/a", client)
	if resp.Body != "seen: Bearer client-own" {
		t.Errorf("respond after entra_token answered %q, want the client's own header", shorten(resp.Body))
	}

	resp = send(t, replica.URL+"/broken/a", client)
	errHeader, _, n := errorRoute.last()
	if n != 1 {
		t.Fatalf("the error route got %d requests (status %d), want 1", n, resp.Status)
	}
	if got := errHeader.Get("Authorization"); got != "Bearer client-own" {
		t.Errorf("the error route's upstream got Authorization %q, want the client's own", shorten(got))
	}
	for _, r := range []response{resp, send(t, replica.URL+"/respond/b", nil)} {
		if strings.Contains(r.Body, token) || strings.Contains(fmt.Sprint(r.Header), token) {
			t.Error("a response holds the token")
		}
	}
	assertNoSecrets(t, replica.logs(), token)
}

// TestConnectionOptionCannotStripTheToken: a client naming Authorization in
// Connection does not keep the token from the upstream, and a refusal of a
// request that no longer carried the token purges nothing (item 2).
func TestConnectionOptionCannotStripTheToken(t *testing.T) {
	f, replica, api, _ := securityReplica(t)
	for _, connection := range []string{"Authorization", "keep-alive, authorization", "AUTHORIZATION"} {
		resp := send(t, replica.URL+"/orders/a", http.Header{"Connection": {connection}})
		if resp.Status != http.StatusOK {
			t.Errorf("Connection: %s: status %d, want 200 (the upstream refuses a request without the token)", connection, resp.Status)
		}
	}
	records := f.records(t)

	// A later handler removed the token: the upstream's 401 is not about it.
	if resp := send(t, replica.URL+"/stripped/a", nil); resp.Status != http.StatusUnauthorized {
		t.Fatalf("stripped: status %d, want the upstream's 401", resp.Status)
	}
	if got := f.records(t); len(got) != 1 || fmt.Sprint(got) != fmt.Sprint(records) {
		t.Errorf("the record changed after a 401 to a request without the token: %d records", len(got))
	}
	if resp := send(t, replica.URL+"/orders/b", nil); resp.Status != http.StatusOK {
		t.Errorf("after the stripped request: status %d", resp.Status)
	}
	if got := f.emulator.TokenRequests(); got != 1 {
		t.Errorf("token requests = %d, want 1: nothing was purged", got)
	}
	if strings.Contains(replica.logs(), "purged") {
		t.Error("the replica purged a token the upstream never saw")
	}
	_, _, n := api.last()
	if n != 5 {
		t.Errorf("upstream requests = %d, want 5", n)
	}
}

// TestTrailersCannotCarryCredentials: Authorization and Proxy-Authorization
// sent as request trailers, announced or not, never reach the upstream
// (item 6).
func TestTrailersCannotCarryCredentials(t *testing.T) {
	_, replica, api, _ := securityReplica(t)
	for _, announce := range []string{"Trailer: Authorization, Proxy-Authorization\r\n", ""} {
		raw := "POST /orders/a HTTP/1.1\r\nHost: sidecar\r\nTransfer-Encoding: chunked\r\n" + announce +
			"Connection: close\r\n\r\n5\r\nhello\r\n0\r\nAuthorization: Bearer planted\r\n" +
			"Proxy-Authorization: Basic cGxhbnRlZA==\r\nX-Checksum: kept\r\n\r\n"
		status, body := rawExchange(t, replica, raw)
		if status != http.StatusOK {
			t.Fatalf("announced %q: status %d: %s", announce, status, body)
		}
		header, trailer, _ := api.last()
		if got := header.Values("Authorization"); len(got) != 1 || !strings.HasPrefix(got[0], "Bearer ey") {
			t.Errorf("announced %q: upstream Authorization has %d values, want the token alone", announce, len(got))
		}
		for name := range trailer {
			if strings.EqualFold(name, "Authorization") || strings.EqualFold(name, "Proxy-Authorization") {
				t.Errorf("announced %q: trailer %s reached the upstream", announce, name)
			}
		}
		// Caddy forwards other trailers only when some were announced.
		if announce != "" && trailer.Get("X-Checksum") != "kept" {
			t.Errorf("announced %q: other trailers were lost: %v", announce, trailer)
		}
	}
}

// TestEncodedDotSegmentsAndTraceNeverLeaveWithAToken: a path with a
// dot-segment (encoded, behind an encoded slash or backslash, before a ";",
// or plain), which Caddy resolves to another route's prefix while the raw
// path goes upstream, is refused, and so are TRACE and CONNECT, before any
// token request (item 10, and the review's bypasses).
func TestEncodedDotSegmentsAndTraceNeverLeaveWithAToken(t *testing.T) {
	f, replica, api, _ := securityReplica(t)
	for _, tt := range []struct {
		requestLine string
		want        int
	}{
		{"GET /reflect/%2e%2e/orders/x HTTP/1.1", http.StatusBadRequest},
		{"GET /reflect/%2E%2e/orders/x HTTP/1.1", http.StatusBadRequest},
		{"GET /reflect/.%2e/orders/x HTTP/1.1", http.StatusBadRequest},
		{"GET /orders/%2e./orders/x HTTP/1.1", http.StatusBadRequest},
		{"GET /reflect/%2e%2e%2forders/x HTTP/1.1", http.StatusBadRequest},
		{"GET /reflect/..%2forders/x HTTP/1.1", http.StatusBadRequest},
		{"GET /reflect%2f..%2forders/x HTTP/1.1", http.StatusBadRequest},
		{"GET /reflect/../orders/x HTTP/1.1", http.StatusBadRequest},
		{"GET /orders/..;/reflect/x HTTP/1.1", http.StatusBadRequest},
		{"GET /orders/x/..%5cy HTTP/1.1", http.StatusBadRequest},
		{"TRACE /orders/x HTTP/1.1", http.StatusMethodNotAllowed},
		{"CONNECT /orders/x HTTP/1.1", http.StatusMethodNotAllowed},
	} {
		status, _ := rawExchange(t, replica, tt.requestLine+"\r\nHost: sidecar\r\nConnection: close\r\n\r\n")
		if status != tt.want {
			t.Errorf("%s: status %d, want %d", tt.requestLine, status, tt.want)
		}
	}
	if _, _, n := api.last(); n != 0 {
		t.Errorf("the upstream got %d requests, want none", n)
	}
	if got := f.emulator.TokenRequests(); got != 0 {
		t.Errorf("token requests = %d, want 0", got)
	}
	if status, body := rawExchange(t, replica, "GET /orders/a%2Eb HTTP/1.1\r\nHost: sidecar\r\nConnection: close\r\n\r\n"); status != http.StatusOK {
		t.Errorf("a dot inside a segment was refused: %d %s", status, body)
	}
}

// TestLoadWarnsAboutLiteralSecretsAndUnredactedHeaders: a secret written in
// the config, and a header Caddy's logs do not redact, are named at load,
// never with their value (items 7 and 8).
func TestLoadWarnsAboutLiteralSecretsAndUnredactedHeaders(t *testing.T) {
	f := newFleet(t)
	config := sidecarConfig(`
		authority_host {env.TEST_AUTHORITY_HOST}
		tenant_id      {env.TEST_TENANT_ID}
		client_id      {env.TEST_CLIENT_ID}
		client_secret  {$TEST_CLIENT_SECRET}
		application orders-api `+testScope,
		route{Path: "/orders", Application: "orders-api", Options: "header X-Api-Token"})
	replica := startSidecar(t, config, f.env(testClientSecret)...)
	if status, body := get(t, replica.URL+"/orders/a", nil); status != http.StatusOK {
		t.Fatalf("status %d: %s", status, body)
	}
	logs := replica.logs()
	for _, want := range []string{"a secret is written in the config", "the injected header is not redacted"} {
		i := strings.Index(logs, want)
		if i < 0 {
			t.Errorf("no load warning %q in the logs", want)
			continue
		}
		line, _, _ := strings.Cut(logs[i:], "\n")
		if !strings.Contains(line, `"field":"client_secret"`) && !strings.Contains(line, `"header":"X-Api-Token"`) {
			t.Errorf("the warning does not name the field: %s", line)
		}
	}
	assertNoSecrets(t, logs)
}

// shorten keeps a failure message from printing a whole token.
func shorten(s string) string {
	if len(s) > 24 {
		return s[:24] + "..."
	}
	return s
}

// TestLogFilterKeepsACustomHeaderOutOfDebugLogs: Caddy redacts only
// Authorization, Cookie and Proxy-Authorization, so with debug logs a custom
// header's token is logged by reverse_proxy; the log filter of
// docs/entra_token.md removes it
// (item 7).
func TestLogFilterKeepsACustomHeaderOutOfDebugLogs(t *testing.T) {
	const filter = `
	log default {
		format filter {
			wrap json
			fields {
				request>headers>X-Api-Token delete
			}
		}
	}`
	for _, withFilter := range []bool{false, true} {
		f := newFleet(t)
		config := strings.Replace(sidecarConfig(testIdentity+`
			application orders-api `+testScope,
			route{Path: "/orders", Application: "orders-api", Options: "header X-Api-Token"}), "\tdebug\n", "\tdebug\n"+map[bool]string{true: filter}[withFilter]+"\n", 1)
		replica := startSidecar(t, config, f.env(testClientSecret)...)
		if status, body := get(t, replica.URL+"/orders/a", nil); status != http.StatusOK {
			t.Fatalf("status %d: %s", status, body)
		}
		token := strings.TrimPrefix(f.upstream.lastHeaders().Get("X-Api-Token"), "Bearer ")
		waitFor(t, "reverse_proxy's debug line", 5*time.Second, func() error {
			if !strings.Contains(replica.logs(), "upstream roundtrip") {
				return fmt.Errorf("not logged yet")
			}
			return nil
		})
		leaked := strings.Contains(replica.logs(), token)
		if withFilter && leaked {
			t.Error("with the log filter, the token is still in the debug log")
		}
		if !withFilter && !leaked {
			t.Log("without the filter the token was not logged: Caddy may now redact custom headers; revisit docs/entra_token.md")
		}
	}
}
