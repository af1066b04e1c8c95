package apptest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddy-entra/caddy-entra/caddymodule/entraapp"
)

// BrowserRequests are what a web page makes a browser send to the sidecar:
// its own name rebound to 127.0.0.1, and cross-site requests.
func BrowserRequests() map[string]func(*http.Request) {
	return map[string]func(*http.Request){
		"rebound Host": func(r *http.Request) { r.Host = "rebind.attacker.example:8080" },
		"text/plain POST Origin": func(r *http.Request) {
			r.Method = http.MethodPost
			r.Header.Set("Content-Type", "text/plain")
			r.Header.Set("Origin", "https://evil.example")
		},
		"Origin null":            func(r *http.Request) { r.Header.Set("Origin", "null") },
		"Sec-Fetch-Site cross":   func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "cross-site") },
		"Sec-Fetch-Site same":    func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "same-site") },
		"Sec-Fetch-Site unknown": func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "other") },
	}
}

// LocalRequests are what local applications send.
func LocalRequests() map[string]func(*http.Request) {
	return map[string]func(*http.Request){
		"service name":          func(r *http.Request) { r.Host = "sidecar:8080" },
		"localhost":             func(r *http.Request) { r.Host = "localhost:8080" },
		"IP address":            func(r *http.Request) { r.Host = "127.0.0.1:8080" },
		"same-origin":           func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "same-origin") },
		"typed in a browser":    func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "none") },
		"IPv6 address, no port": func(r *http.Request) { r.Host = "[::1]" },
	}
}

// AssertNotLocal checks a refusal of entraapp.CodeRequestNotLocal.
func AssertNotLocal(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	var body entraapp.ErrorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("answer %d is not JSON: %q", rec.Code, rec.Body.String())
	}
	if rec.Code != http.StatusForbidden || body.Code != entraapp.CodeRequestNotLocal {
		t.Errorf("answer %d %+v, want 403 %s", rec.Code, body, entraapp.CodeRequestNotLocal)
	}
	if rec.Header().Get("Cache-Control") != "no-store" || strings.Contains(rec.Body.String(), "eyJ") {
		t.Errorf("answer headers %v, body %q", rec.Header(), rec.Body.String())
	}
}
