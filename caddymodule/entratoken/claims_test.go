package entratoken

import (
	"bytes"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func TestChallengeClaims(t *testing.T) {
	claims := `{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}`
	std, raw := base64.StdEncoding.EncodeToString([]byte(claims)), base64.RawURLEncoding.EncodeToString([]byte(claims))
	// Claims the token endpoint is asked for are bounded: a downstream's
	// 100 KiB of them are not sent (a failure of such a request would back
	// the application off).
	padded := func(n int) string {
		return `{"access_token":{"nbf":{"essential":true,"value":"` + strings.Repeat("1", n-len(`{"access_token":{"nbf":{"essential":true,"value":""}}}`)) + `"}}}`
	}
	atBound, overBound := padded(maxChallengeClaimsBytes), padded(100<<10)
	for _, tt := range []struct {
		name       string
		challenges []string
		want       string
		ok         bool
	}{
		{"graph's form", []string{`Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", error="insufficient_claims", claims="` + std + `"`}, claims, true},
		{"unpadded url alphabet", []string{`Bearer error="insufficient_claims", claims="` + raw + `"`}, claims, true},
		{"second challenge", []string{`Basic realm="x"`, `Bearer error="insufficient_claims",claims="` + std + `"`}, claims, true},
		{"another error", []string{`Bearer error="invalid_token", claims="` + std + `"`}, "", false},
		{"no claims", []string{`Bearer error="insufficient_claims"`}, "", false},
		{"not base64 JSON", []string{`Bearer error="insufficient_claims", claims="bm90IGpzb24="`}, "", false},
		{"none", nil, "", false},
		{"4 KiB of claims", []string{`Bearer error="insufficient_claims", claims="` + base64.StdEncoding.EncodeToString([]byte(atBound)) + `"`}, atBound, true},
		{"a byte over 4 KiB", []string{`Bearer error="insufficient_claims", claims="` + base64.StdEncoding.EncodeToString([]byte(padded(maxChallengeClaimsBytes+1))) + `"`}, "", false},
		{"100 KiB of claims", []string{`Bearer error="insufficient_claims", claims="` + base64.StdEncoding.EncodeToString([]byte(overBound)) + `"`}, "", false},
	} {
		got, ok := challengeClaims(tt.challenges)
		if got != tt.want || ok != tt.ok {
			t.Errorf("%s: got %q, %v; want %q, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}

func TestBodiless(t *testing.T) {
	get, _ := http.NewRequest(http.MethodGet, "http://x/", nil)
	if !bodiless(get) {
		t.Error("a GET without a body is not bodiless")
	}
	wrapped := &http.Request{Body: http.MaxBytesReader(nil, http.NoBody, 1), ContentLength: 0} // Caddy wraps bodies
	if !bodiless(wrapped) {
		t.Error("a wrapped empty body is not bodiless")
	}
	for _, r := range []*http.Request{
		{Body: http.MaxBytesReader(nil, http.NoBody, 1), ContentLength: 5},
		{Body: http.MaxBytesReader(nil, http.NoBody, 1), ContentLength: -1, TransferEncoding: []string{"chunked"}},
	} {
		if bodiless(r) {
			t.Errorf("a request with a body (length %d, %v) is bodiless", r.ContentLength, r.TransferEncoding)
		}
	}
}

// TestHeldChallengeFlushesWhatItPassesOn: an answer that is not a claims
// challenge, and one that outgrew the bound, are flushed as they stream.
func TestHeldChallengeFlushesWhatItPassesOn(t *testing.T) {
	for name, status := range map[string]int{"not a challenge": http.StatusOK, "outgrown challenge": http.StatusUnauthorized} {
		w := httptest.NewRecorder()
		c := &heldChallenge{w: w, ResponseRecorder: caddyhttp.NewResponseRecorder(w, new(bytes.Buffer), func(status int, _ http.Header) bool {
			return status == http.StatusUnauthorized
		})}
		c.WriteHeader(status)
		if _, err := c.Write(make([]byte, maxHeldChallengeBytes+1)); err != nil {
			t.Fatal(err)
		}
		if err := http.NewResponseController(c).Flush(); err != nil || !w.Flushed {
			t.Errorf("%s: flushed %v (%v), want flushed", name, w.Flushed, err)
		}
		if w.Code != status || w.Body.Len() != maxHeldChallengeBytes+1 {
			t.Errorf("%s: passed on %d with %d bytes", name, w.Code, w.Body.Len())
		}
	}
}

// TestHeldChallengeKeepsPushAndHijack: handlers after entra_token that
// assert http.Pusher or http.Hijacker (Caddy's push) still find them.
func TestHeldChallengeKeepsPushAndHijack(t *testing.T) {
	w := httptest.NewRecorder()
	var c http.ResponseWriter = &heldChallenge{w: w, ResponseRecorder: caddyhttp.NewResponseRecorder(w, new(bytes.Buffer), nil)}
	if p, ok := c.(http.Pusher); !ok || p.Push("/x", nil) == nil {
		t.Error("no http.Pusher, or one that pushed where the writer below cannot")
	}
	if h, ok := c.(http.Hijacker); !ok {
		t.Error("no http.Hijacker")
	} else if _, _, err := h.Hijack(); err == nil {
		t.Error("hijacked a writer that cannot be")
	}
}
