package entra

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

// FuzzParseTokenResponse checks that no response makes ParseTokenResponse
// panic, that every failure is a *RequestError with a single-line message,
// and that every success is a usable token.
func FuzzParseTokenResponse(f *testing.F) {
	seeds := []struct {
		status     int
		retryAfter string
		body       string
	}{
		{200, "", `{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ0.eyJ1.c2ln"}`},
		{200, "", `{"token_type":"Bearer","expires_in":"3599","access_token":"a"}`},
		{200, "", `{"expires_in":1e400,"access_token":"a"}`},
		{200, "", `{"expires_in":-0,"access_token":"a"}`},
		{200, "", `{"expires_in":9.3e9,"access_token":"a"}`},
		{200, "", `{}`},
		{200, "", `null`},
		{200, "", `<html></html>`},
		{400, "", `{"error":"invalid_scope","error_description":"AADSTS1002012: bad\r\nTrace ID: x","error_codes":[1002012],"trace_id":"t","correlation_id":"c"}`},
		{429, "30", `{"error":"temporarily_unavailable"}`},
		{503, "Wed, 21 Oct 2015 07:28:00 GMT", ``},
		{0, "", ``},
		{-1, "", `{"error_codes":[1,2,3,4,5,6,7,8,9,10]}`},
	}
	for _, s := range seeds {
		f.Add(s.status, s.retryAfter, []byte(s.body))
	}
	sentAt := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	f.Fuzz(func(t *testing.T, status int, retryAfter string, body []byte) {
		header := http.Header{"Retry-After": {retryAfter}}
		token, err := ParseTokenResponse(status, header, body, sentAt)
		if err != nil {
			if token != nil {
				t.Fatal("both a token and an error")
			}
			var reqErr *RequestError
			if !errors.As(err, &reqErr) {
				t.Fatalf("error %T is not a *RequestError", err)
			}
			if reqErr.RetryAfter < 0 || reqErr.RetryAfter > longestDuration {
				t.Fatalf("RetryAfter = %s", reqErr.RetryAfter)
			}
			if msg := err.Error(); strings.ContainsAny(msg, "\r\n") {
				t.Fatalf("multi-line message %q", msg)
			}
			return
		}
		if status < 200 || status > 299 {
			t.Fatalf("success with status %d", status)
		}
		if token.AccessToken == "" || token.ExpiresIn <= 0 || token.ExtExpiresIn < 0 || token.RefreshIn < 0 {
			t.Fatalf("unusable token: %v", token)
		}
		if !token.ExpiresAt.After(sentAt) {
			t.Fatalf("ExpiresAt %s not after sentAt", token.ExpiresAt)
		}
		if token.TokenType != "Bearer" {
			t.Fatalf("TokenType = %q", token.TokenType)
		}
	})
}

// FuzzParseManagedIdentityResponse checks the managed identity parser as
// FuzzParseTokenResponse checks the token endpoint's: no panic, failures
// are single-line *RequestErrors, successes are usable tokens that expire
// after sentAt.
func FuzzParseManagedIdentityResponse(f *testing.F) {
	seeds := []struct {
		status int
		body   string
	}{
		{200, `{"access_token":"eyJ0.eyJ1.c2ln","client_id":"c","expires_in":"86399","expires_on":"1735787045","ext_expires_in":"86399","not_before":"1735700345","resource":"https://vault.azure.net","token_type":"Bearer"}`},
		{200, `{"access_token":"a","expires_on":"1735787045","resource":"r","token_type":"Bearer","client_id":"c"}`},
		{200, `{"access_token":"a","expires_on":1735787045}`},
		{200, `{"access_token":"a","expires_on":"01/02/2025 03:04:05 PM +00:00"}`},
		{200, `{"access_token":"a","expires_in":"86399","expires_on":"2025-01-02T04:04:05.0000000+00:00"}`},
		{200, `{"access_token":"a","expires_on":"2025-01-02 04:04:05"}`},
		{200, `{"access_token":"a","expires_in":"x","expires_on":"1e308"}`},
		{200, `{"access_token":"a","expires_on":"-1"}`},
		{200, `{"access_token":"a"}`},
		{400, `{"error":"invalid_request","error_description":"Identity not found"}`},
		{401, `{"statusCode":401,"message":"Unauthorized\r\nline"}`},
		{410, ``},
	}
	for _, s := range seeds {
		f.Add(s.status, []byte(s.body))
	}
	sentAt := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		token, err := ParseManagedIdentityResponse(status, nil, body, sentAt)
		if err != nil {
			if token != nil {
				t.Fatal("both a token and an error")
			}
			var reqErr *RequestError
			if !errors.As(err, &reqErr) {
				t.Fatalf("error %T is not a *RequestError", err)
			}
			if msg := err.Error(); strings.ContainsAny(msg, "\r\n") {
				t.Fatalf("multi-line message %q", msg)
			}
			_ = reqErr.PermanentFailure()
			_ = reqErr.Summary()
			return
		}
		if status < 200 || status > 299 {
			t.Fatalf("success with status %d", status)
		}
		if token.AccessToken == "" || token.ExpiresIn <= 0 || token.ExpiresIn > maxLifetime || token.TokenType != "Bearer" {
			t.Fatalf("unusable token: %v", token)
		}
		if !token.ExpiresAt.After(sentAt) {
			t.Fatalf("ExpiresAt %s not after sentAt", token.ExpiresAt)
		}
	})
}

// FuzzReadUserAssertion checks that no token makes ReadUserAssertion panic,
// that a refusal is a *UserTokenError that does not quote the token, and
// that an accepted token passed every check.
func FuzzReadUserAssertion(f *testing.F) {
	const tenant, client = "00000000-0000-4000-8000-000000000001", "11111111-2222-4333-8444-555555555555"
	for _, payload := range []string{
		`{"aud":"api://` + client + `","tid":"` + tenant + `","oid":"o","exp":1900000000}`,
		`{"aud":["x","` + client + `"],"tid":"` + tenant + `","exp":1.9e9}`,
		`{"aud":"api://` + client + `","tid":"common","exp":1900000000}`,
		`{"exp":"1900000000"}`, `null`, `[]`, `{"aud":""}`,
	} {
		f.Add("eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(payload)) + ".c2ln")
	}
	f.Add("not a token")
	rules := UserTokenRules{TenantID: tenant, ClientID: client}
	now := time.Unix(1800000000, 0)
	f.Fuzz(func(t *testing.T, token string) {
		user, err := ReadUserAssertion(token, now, rules)
		if err != nil {
			var tokenErr *UserTokenError
			if user != nil || !errors.As(err, &tokenErr) {
				t.Fatalf("ReadUserAssertion = %v, %v", user, err)
			}
			if len(token) > 8 && strings.Contains(err.Error(), token) {
				t.Fatalf("error %q quotes the token", err)
			}
			return
		}
		if !user.ExpiresAt.After(now) || user.TenantID != tenant || user.token != token {
			t.Fatalf("accepted %v", user)
		}
	})
}
