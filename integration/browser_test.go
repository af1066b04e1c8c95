package integration

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// browserCaddyfile serves entra_token, entra_ready and entra_token_endpoint
// on loopback and on {$TEST_EXTRA_BIND} (a non-loopback address of this
// machine, when it has one); sidecarGlobalOptions lists the hosts name
// "sidecar".
const browserCaddyfile = sidecarGlobalOptions + `
:%[1]d {
	bind 127.0.0.1 {$TEST_EXTRA_BIND}
	handle_path /orders/* {
		entra_token orders-api
		reverse_proxy {$TEST_UPSTREAM}
	}
	handle /readyz {
		entra_ready
	}
	handle /token {
		entra_token_endpoint record {
			secret {env.TEST_IDENTITY_HEADER}
		}
	}
}
`

// TestBrowserCannotUseTheSidecar: what a web page makes a browser send (its
// DNS name rebound to 127.0.0.1, a cross-site text/plain POST with Origin,
// Sec-Fetch-Site) is refused by every directive of the real binary, before
// any upstream call or token request (issue 15, item 4). A name listed in
// hosts is served.
func TestBrowserCannotUseTheSidecar(t *testing.T) {
	f := newFleet(t)
	s := startSidecar(t, browserCaddyfile, append(f.env(testClientSecret), "TEST_IDENTITY_HEADER="+testIdentityHeader)...)
	port := strings.TrimPrefix(s.URL, "http://127.0.0.1:")
	secret := "X-Identity-Header: " + testIdentityHeader + "\r\n"
	for _, tc := range []struct {
		name, request, code string
	}{
		{"proxy route, rebound Host",
			"GET /orders/a HTTP/1.1\r\nHost: rebind.attacker.example:" + port + "\r\n", "MICROSOFT_REQUEST_NOT_LOCAL"},
		{"proxy route, cross-site text/plain POST",
			"POST /orders/a HTTP/1.1\r\nHost: 127.0.0.1:" + port + "\r\nOrigin: https://evil.example\r\n" +
				"Content-Type: text/plain\r\nContent-Length: 5\r\n", "MICROSOFT_REQUEST_NOT_LOCAL"},
		{"proxy route, Sec-Fetch-Site",
			"GET /orders/a HTTP/1.1\r\nHost: localhost:" + port + "\r\nSec-Fetch-Site: cross-site\r\n", "MICROSOFT_REQUEST_NOT_LOCAL"},
		{"entra_ready, rebound Host",
			"GET /readyz HTTP/1.1\r\nHost: rebind.attacker.example:" + port + "\r\n", "MICROSOFT_REQUEST_NOT_LOCAL"},
		{"entra_ready, Origin",
			"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1:" + port + "\r\nOrigin: https://evil.example\r\n", "MICROSOFT_REQUEST_NOT_LOCAL"},
		{"token endpoint, rebound Host",
			"GET /token?applicationName=orders-api HTTP/1.1\r\nHost: rebind.attacker.example:" + port + "\r\n" + secret, "forbidden"},
		{"token endpoint, Origin",
			"POST /token?applicationName=orders-api HTTP/1.1\r\nHost: 127.0.0.1:" + port + "\r\n" + secret +
				"Origin: https://evil.example\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n", "forbidden"},
	} {
		raw := tc.request + "Connection: close\r\n\r\n"
		if strings.Contains(tc.request, "Content-Length: 5") {
			raw += "hello"
		}
		status, body := rawExchange(t, s, raw)
		var answer struct{ Code, Message string }
		if err := json.Unmarshal([]byte(body), &answer); err != nil || status != http.StatusForbidden || answer.Code != tc.code {
			t.Errorf("%s: %d %q, want 403 %s", tc.name, status, withoutToken(body), tc.code)
		}
		if strings.Contains(tc.name, "rebound Host") && !strings.Contains(answer.Message, "hosts") {
			t.Errorf("%s: the message does not name the hosts option: %q", tc.name, answer.Message)
		}
	}
	if got := f.upstream.requests(); len(got) != 0 {
		t.Errorf("the upstream was called %d times for refused requests", len(got))
	}
	if got := f.emulator.TokenRequests(); got != 0 {
		t.Errorf("refused requests made %d token requests, want none", got)
	}
	// The application calling the sidecar by a name listed in hosts.
	status, body := rawExchange(t, s, "GET /orders/a HTTP/1.1\r\nHost: sidecar:"+port+"\r\nConnection: close\r\n\r\n")
	if got := f.upstream.requests(); status != http.StatusOK || len(got) != 1 || len(got[0]) != 1 || !strings.HasPrefix(got[0][0], "Bearer ey") {
		t.Errorf("Host listed in hosts: %d %q, upstream saw %d requests", status, withoutToken(body), len(got))
	}
}

// withoutToken is body for a failure message, unless it holds a token.
func withoutToken(body string) string {
	if strings.Contains(body, "eyJ") {
		return "(a body holding a token)"
	}
	return body
}

// TestReadyShowsDetailsToLoopbackPeersOnly: entra_ready answers a peer off
// loopback (a kubelet on the pod network) with the status and
// {"ready": bool} alone; application names and expiries are for loopback
// (issue 15, item 10).
func TestReadyShowsDetailsToLoopbackPeersOnly(t *testing.T) {
	extra := nonLoopbackIPv4()
	if extra == "" {
		t.Skip("this machine has no non-loopback IPv4 address")
	}
	f := newFleet(t)
	s := startSidecar(t, browserCaddyfile, append(f.env(testClientSecret),
		"TEST_IDENTITY_HEADER="+testIdentityHeader, "TEST_EXTRA_BIND="+extra)...)
	local := send(t, s.URL+"/readyz", nil)
	var details struct {
		Ready        bool
		Applications map[string]struct {
			Ready                bool
			AccessTokenExpiresAt string
		}
	}
	if err := json.Unmarshal([]byte(local.Body), &details); err != nil || local.Status != http.StatusOK ||
		!details.Ready || details.Applications["orders-api"].AccessTokenExpiresAt == "" {
		t.Fatalf("loopback probe: %d %q", local.Status, local.Body)
	}
	remote := send(t, strings.Replace(s.URL, "127.0.0.1", extra, 1)+"/readyz", nil)
	if remote.Status != http.StatusOK || strings.TrimSpace(remote.Body) != `{"ready":true}` {
		t.Errorf("probe from %s: %d %q, want 200 {\"ready\":true}", extra, remote.Status, remote.Body)
	}
	if strings.Contains(remote.Body, "orders-api") {
		t.Errorf("a non-loopback peer learned an application name: %q", remote.Body)
	}
}
