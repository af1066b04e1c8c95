package entratoken

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

func TestWithTokenLeavesTheClientsRequestAlone(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "http://sidecar/x", nil)
	r.Header["Authorization"] = []string{"Bearer client-own"}
	r.Header["authorization"] = []string{"Bearer lower-case"} // not canonical: set by hand
	r.Header.Set("Connection", "keep-alive, AUTHORIZATION")
	r.Header.Add("Connection", "authorization")
	r.Header.Set("X-Other", "kept")

	proxied := withToken(r, "Authorization", "Bearer injected")

	if got := r.Header.Values("Authorization"); len(got) != 1 || got[0] != "Bearer client-own" {
		t.Errorf("the client's request changed: Authorization = %q", got)
	}
	if got := r.Header.Values("Connection"); len(got) != 2 {
		t.Errorf("the client's Connection changed: %q", got)
	}
	if got := proxied.Header["Authorization"]; len(got) != 1 || got[0] != "Bearer injected" {
		t.Errorf("proxied Authorization = %q, want only the token", got)
	}
	if _, ok := proxied.Header["authorization"]; ok {
		t.Error("a non-canonical client copy of the header was passed on")
	}
	if got := proxied.Header.Values("Connection"); len(got) != 1 || got[0] != "keep-alive" {
		t.Errorf("proxied Connection = %q, want only keep-alive", got)
	}
	if proxied.Header.Get("X-Other") != "kept" {
		t.Error("another header was lost")
	}
	proxied.Header.Set("X-Other", "changed")
	if r.Header.Get("X-Other") != "kept" {
		t.Error("the proxied request shares header values with the client's")
	}
	if !carriesToken(proxied, "Authorization", "Bearer injected") {
		t.Error("carriesToken is false for the request as handed on")
	}
	proxied.Header.Add("Connection", "Authorization")
	if carriesToken(proxied, "Authorization", "Bearer injected") {
		t.Error("carriesToken is true though a Connection option now names the header")
	}
	proxied.Header.Del("Authorization")
	if carriesToken(proxied, "Authorization", "Bearer injected") {
		t.Error("carriesToken is true for a request whose token was removed")
	}
}

func TestWithoutConnectionOption(t *testing.T) {
	for _, tt := range []struct {
		in   []string
		want []string
	}{
		{[]string{"close"}, []string{"close"}},
		{[]string{"Authorization"}, []string{}},
		{[]string{" authorization ,keep-alive"}, []string{"keep-alive"}},
		{[]string{"te, Authorization, upgrade", "x-authorization"}, []string{"te, upgrade", "x-authorization"}},
	} {
		got := withoutConnectionOption(tt.in, "Authorization")
		if strings.Join(got, "|") != strings.Join(tt.want, "|") {
			t.Errorf("withoutConnectionOption(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestTrailersNeverCarryCredentials sends a real chunked request with
// announced and unannounced trailers through a net/http server and reads
// the body of the request withToken makes, as reverse_proxy does.
func TestTrailersNeverCarryCredentials(t *testing.T) {
	type seen struct {
		trailer  http.Header
		original http.Header
	}
	got := make(chan seen, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proxied := withToken(r, "X-Api-Token", "Bearer injected")
		if _, err := io.Copy(io.Discard, proxied.Body); err != nil {
			t.Error(err)
		}
		got <- seen{trailer: proxied.Trailer, original: r.Trailer}
	}))
	defer srv.Close()

	raw := "POST / HTTP/1.1\r\nHost: sidecar\r\nTransfer-Encoding: chunked\r\nTrailer: X-Api-Token\r\n\r\n" +
		"5\r\nhello\r\n0\r\nX-Api-Token: Bearer planted\r\nProxy-Authorization: Basic planted\r\n" +
		"x-api-token: Bearer planted-lower\r\nX-Other: kept\r\n\r\n"
	resp := rawRequest(t, srv.Listener.Addr().String(), raw)
	resp.Body.Close()
	s := <-got
	for name := range s.trailer {
		if strings.EqualFold(name, "X-Api-Token") || strings.EqualFold(name, "Proxy-Authorization") {
			t.Errorf("trailer %s passed on", name)
		}
	}
	if s.trailer.Get("X-Other") != "kept" {
		t.Errorf("an unannounced trailer was lost: %v", s.trailer)
	}
	if s.original.Get("X-Api-Token") == "" {
		t.Error("the test sent no trailer the server kept")
	}
}

// rawRequest writes raw on a new connection and reads the response.
func rawRequest(t *testing.T, addr, raw string) *http.Response {
	t.Helper()
	conn, err := (&net.Dialer{}).Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestCheckRequest(t *testing.T) {
	for _, tt := range []struct {
		method, target string
		want           int // 0: accepted
	}{
		{http.MethodGet, "/graph/v1.0/me", 0},
		{http.MethodPost, "/graph/a%2Fb/c", 0},
		{http.MethodGet, "/graph/%2e%2e/orders/x", http.StatusBadRequest},
		{http.MethodGet, "/graph/%2E%2E/orders/x", http.StatusBadRequest},
		{http.MethodGet, "/graph/.%2e/orders/x", http.StatusBadRequest},
		{http.MethodGet, "/graph/%2e./orders/x", http.StatusBadRequest},
		{http.MethodGet, "/graph/%2e/orders", http.StatusBadRequest},
		{http.MethodGet, "/graph/%2e%2e", http.StatusBadRequest},
		{http.MethodGet, "/graph/%2e%2ex/file", 0},
		{http.MethodGet, "/graph/a.%2ejson", 0},
		{http.MethodGet, "/graph/x?next=%2e%2e/y", 0},
		{http.MethodGet, "/graph/v1.0/me/photo.jpg", 0},
		{http.MethodGet, "/graph/items/a%2Fb", 0},
		{http.MethodGet, "/graph/...", 0},
		{http.MethodGet, "/api/write/%2e%2e%2fread/x", http.StatusBadRequest},
		{http.MethodGet, "/api/write/..%2fread/x", http.StatusBadRequest},
		{http.MethodGet, "/api/write%2f..%2fread/x", http.StatusBadRequest},
		{http.MethodGet, "/api/write/../read/x", http.StatusBadRequest},
		{http.MethodGet, "/api/write/./x", http.StatusBadRequest},
		{http.MethodGet, "/api/read/..;/write/x", http.StatusBadRequest},
		{http.MethodGet, "/api/read/%2e%2e;/write/x", http.StatusBadRequest},
		{http.MethodGet, "/api/read/..%5cwrite/x", http.StatusBadRequest},
		{http.MethodTrace, "/graph/v1.0/me", http.StatusMethodNotAllowed},
		{http.MethodConnect, "/graph/v1.0/me", http.StatusMethodNotAllowed},
		{"trace", "/graph/v1.0/me", http.StatusMethodNotAllowed}, // forwarded as sent; some servers fold it
		{"Connect", "/graph/v1.0/me", http.StatusMethodNotAllowed},
	} {
		r := httptest.NewRequest(tt.method, "http://sidecar"+tt.target, nil)
		r.RequestURI = tt.target
		rejection := checkRequest(r)
		switch {
		case tt.want == 0 && rejection != nil:
			t.Errorf("%s %s: refused: %v", tt.method, tt.target, rejection)
		case tt.want != 0 && (rejection == nil || rejection.status != tt.want):
			t.Errorf("%s %s: got %v, want status %d", tt.method, tt.target, rejection, tt.want)
		}
	}
}

// A client copy of the injected header spelled with "_" or "." (which CGI
// and FastCGI upstreams read as the same variable, once Caddy's
// expected_underscore_headers lets it in) is removed, as any case is.
func TestUnderscoreAndDotCopiesOfTheHeaderAreRemoved(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "http://localhost/x", nil)
	for _, name := range []string{"X_Api_Token", "x.api.token", "X-API_TOKEN", "x-api-token"} {
		r.Header[name] = []string{"client-value"}
	}
	r.Header["X-Api-Tokens"] = []string{"kept"}
	r.Header["Connection"] = []string{"X_Api_Token, keep-alive"}
	proxied := withToken(r, "X-Api-Token", "Bearer injected")
	for name, values := range proxied.Header {
		if slices.Contains(values, "client-value") {
			t.Errorf("%s: the client's copy reached the next handler", name)
		}
	}
	if got := proxied.Header["X-Api-Token"]; len(got) != 1 || got[0] != "Bearer injected" {
		t.Errorf("X-Api-Token = %q, want the injected token only", got)
	}
	if proxied.Header.Get("X-Api-Tokens") != "kept" || !slices.Equal(proxied.Header["Connection"], []string{"keep-alive"}) {
		t.Errorf("other headers changed: %v", proxied.Header)
	}
	if !sameHeader("Proxy_Authorization", "Proxy-Authorization") || sameHeader("X-Api-Tokem", "X-Api-Token") {
		t.Error("sameHeader compares wrongly")
	}
}
