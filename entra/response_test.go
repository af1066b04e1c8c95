package entra

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

const sampleToken = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJ4In0.c2lnbmF0dXJl"

func TestParseTokenResponseSuccess(t *testing.T) {
	sentAt := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name          string
		body          string
		wantExpiresIn time.Duration
		wantExt       time.Duration
		wantRefresh   time.Duration
	}{
		{"entra v2 answer", `{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"` + sampleToken + `"}`, 3599 * time.Second, 3599 * time.Second, 0},
		{"numeric strings (v1 endpoint)", `{"token_type":"Bearer","expires_in":"3599","ext_expires_in":"3600","refresh_in":"1799","access_token":"` + sampleToken + `"}`, 3599 * time.Second, time.Hour, 1799 * time.Second},
		{"token_type lower case", `{"token_type":"bearer","expires_in":60,"access_token":"` + sampleToken + `"}`, time.Minute, 0, 0},
		{"token_type absent", `{"expires_in":60,"access_token":"` + sampleToken + `"}`, time.Minute, 0, 0},
		{"fraction truncated", `{"expires_in":60.9,"access_token":"` + sampleToken + `"}`, time.Minute, 0, 0},
		{"exponent", `{"expires_in":3.6e3,"access_token":"` + sampleToken + `"}`, time.Hour, 0, 0},
		{"malformed optional fields ignored", `{"expires_in":60,"ext_expires_in":"soon","refresh_in":-5,"access_token":"` + sampleToken + `"}`, time.Minute, 0, 0},
		{"unknown fields ignored", `{"expires_in":60,"access_token":"` + sampleToken + `","foo":{"bar":[1,2]}}`, time.Minute, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token, err := ParseTokenResponse(http.StatusOK, nil, []byte(tt.body), sentAt)
			if err != nil {
				t.Fatalf("ParseTokenResponse() error: %v", err)
			}
			if token.AccessToken != sampleToken || token.TokenType != "Bearer" {
				t.Errorf("AccessToken, TokenType = %q, %q", token.AccessToken, token.TokenType)
			}
			if token.ExpiresIn != tt.wantExpiresIn || !token.ExpiresAt.Equal(sentAt.Add(tt.wantExpiresIn)) {
				t.Errorf("ExpiresIn, ExpiresAt = %s, %s; want %s, sentAt+%[3]s", token.ExpiresIn, token.ExpiresAt, tt.wantExpiresIn)
			}
			if token.ExtExpiresIn != tt.wantExt || token.RefreshIn != tt.wantRefresh {
				t.Errorf("ExtExpiresIn, RefreshIn = %s, %s; want %s, %s", token.ExtExpiresIn, token.RefreshIn, tt.wantExt, tt.wantRefresh)
			}
		})
	}
}

func TestParseTokenResponseMalformed(t *testing.T) {
	withExpiresIn := func(v string) string {
		return `{"token_type":"Bearer","access_token":"` + sampleToken + `","expires_in":` + v + `}`
	}
	tests := []struct {
		name   string
		status int
		body   string
		cause  string
	}{
		{"empty body", 200, ``, "not a JSON object"},
		{"not JSON", 200, `access_token=abc&expires_in=3599`, "not a JSON object"},
		{"HTML", 200, `<!DOCTYPE html><html><body>Sign in</body></html>`, "not a JSON object"},
		{"JSON array", 200, `[{"access_token":"x","expires_in":1}]`, "not a JSON object"},
		{"JSON null", 200, `null`, "not a JSON object"},
		{"trailing garbage", 200, withExpiresIn("1") + `x`, "not a JSON object"},
		{"empty object", 200, `{}`, "access_token is missing"},
		{"missing access_token", 200, `{"token_type":"Bearer","expires_in":3599}`, "access_token is missing"},
		{"empty access_token", 200, `{"access_token":"","expires_in":3599}`, "access_token is empty"},
		{"null access_token", 200, `{"access_token":null,"expires_in":3599}`, "access_token is empty"},
		{"numeric access_token", 200, `{"access_token":12,"expires_in":3599}`, "access_token is not a string"},
		{"access_token with newline", 200, `{"access_token":"abc\r\nX-Evil: 1","expires_in":3599}`, "not allowed in a header"},
		{"expires_in missing", 200, `{"access_token":"` + sampleToken + `"}`, "expires_in is missing"},
		{"expires_in 0", 200, withExpiresIn("0"), "expires_in is not positive"},
		{"expires_in negative", 200, withExpiresIn("-5"), "expires_in is not positive"},
		{"expires_in under a second", 200, withExpiresIn("0.5"), "expires_in is not positive"},
		{"expires_in abc", 200, withExpiresIn(`"abc"`), "expires_in is not a number"},
		{"expires_in empty string", 200, withExpiresIn(`""`), "expires_in is not a number"},
		{"expires_in hex string", 200, withExpiresIn(`"0x10"`), "expires_in is not a number"},
		{"expires_in Inf string", 200, withExpiresIn(`"Inf"`), "expires_in is not a number"},
		{"expires_in true", 200, withExpiresIn("true"), "expires_in is not a number"},
		{"expires_in null", 200, withExpiresIn("null"), "expires_in is not a number"},
		{"expires_in object", 200, withExpiresIn("{}"), "expires_in is not a number"},
		{"expires_in huge", 200, withExpiresIn("1e300"), "expires_in is out of range"},
		{"token_type mac", 200, `{"token_type":"mac","access_token":"` + sampleToken + `","expires_in":3599}`, "token_type is not Bearer"},
		{"token_type number", 200, `{"token_type":1,"access_token":"` + sampleToken + `","expires_in":3599}`, "token_type is not a string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token, err := ParseTokenResponse(tt.status, http.Header{}, []byte(tt.body), time.Now())
			if err == nil {
				t.Fatalf("ParseTokenResponse() = %v, want an error", token)
			}
			var reqErr *RequestError
			if !errors.As(err, &reqErr) {
				t.Fatalf("error %T is not a *RequestError", err)
			}
			if !errors.Is(err, ErrMalformedResponse) {
				t.Errorf("error %v does not wrap ErrMalformedResponse", err)
			}
			if reqErr.StatusCode != tt.status {
				t.Errorf("StatusCode = %d, want %d", reqErr.StatusCode, tt.status)
			}
			if !strings.Contains(err.Error(), tt.cause) {
				t.Errorf("message %q does not contain %q", err, tt.cause)
			}
			if strings.Contains(err.Error(), sampleToken) {
				t.Errorf("message %q contains the access token", err)
			}
		})
	}
}

func TestParseTokenResponseEntraError(t *testing.T) {
	body := `{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value.\r\nTrace ID: 0a1b\r\nCorrelation ID: 2c3d\r\nTimestamp: 2025-01-02 03:04:05Z","error_codes":[7000215],"timestamp":"2025-01-02 03:04:05Z","trace_id":"0a1b-trace","correlation_id":"2c3d-corr","error_uri":"https://login.microsoftonline.com/error?code=7000215"}`
	_, err := ParseTokenResponse(http.StatusUnauthorized, http.Header{"Retry-After": {"5"}}, []byte(body), time.Now())
	var reqErr *RequestError
	if !errors.As(err, &reqErr) {
		t.Fatalf("error %v is not a *RequestError", err)
	}
	want := RequestError{
		StatusCode:    401,
		Code:          "invalid_client",
		Description:   "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value.",
		TraceID:       "0a1b-trace",
		CorrelationID: "2c3d-corr",
		RetryAfter:    5 * time.Second,
	}
	if reqErr.StatusCode != want.StatusCode || reqErr.Code != want.Code || reqErr.Description != want.Description ||
		reqErr.TraceID != want.TraceID || reqErr.CorrelationID != want.CorrelationID || reqErr.RetryAfter != want.RetryAfter ||
		fmt.Sprint(reqErr.ErrorCodes) != "[7000215]" || reqErr.Err != nil {
		t.Errorf("got %#v\nwant %#v", *reqErr, want)
	}
	wantMsg := "entra: token request failed: invalid client secret (AADSTS7000215): status 401: invalid_client: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value. retry_after=5s trace_id=0a1b-trace correlation_id=2c3d-corr"
	if err.Error() != wantMsg {
		t.Errorf("message\n%s\nwant\n%s", err, wantMsg)
	}
}

func TestParseTokenResponseErrorEdgeCases(t *testing.T) {
	t.Run("non-JSON error body is not quoted", func(t *testing.T) {
		_, err := ParseTokenResponse(http.StatusBadGateway, nil, []byte("<html>upstream secret-ish</html>"), time.Now())
		if !errors.Is(err, ErrMalformedResponse) || strings.Contains(err.Error(), "upstream") {
			t.Errorf("error = %v", err)
		}
		if !strings.Contains(err.Error(), "status 502") {
			t.Errorf("message %q lacks the status", err)
		}
	})
	t.Run("IDs from headers", func(t *testing.T) {
		header := http.Header{"X-Ms-Request-Id": {"hdr-trace"}, "Client-Request-Id": {"hdr-corr"}}
		_, err := ParseTokenResponse(http.StatusServiceUnavailable, header, []byte(`{"error":"temporarily_unavailable"}`), time.Now())
		var reqErr *RequestError
		if !errors.As(err, &reqErr) || reqErr.TraceID != "hdr-trace" || reqErr.CorrelationID != "hdr-corr" {
			t.Errorf("error = %#v", err)
		}
	})
	t.Run("fields of the wrong type are ignored", func(t *testing.T) {
		_, err := ParseTokenResponse(http.StatusBadRequest, nil, []byte(`{"error":5,"error_codes":"x","error_description":"AADSTS1: d","trace_id":["a"]}`), time.Now())
		var reqErr *RequestError
		if !errors.As(err, &reqErr) || reqErr.Code != "" || reqErr.ErrorCodes != nil || reqErr.Description != "AADSTS1: d" || reqErr.TraceID != "" || reqErr.Err != nil {
			t.Errorf("error = %#v", err)
		}
	})
	t.Run("long and multi-line fields are trimmed", func(t *testing.T) {
		body := `{"error":"bad\u001b[31m","error_description":"` + strings.Repeat("é", 1000) + `"}`
		_, err := ParseTokenResponse(http.StatusBadRequest, nil, []byte(body), time.Now())
		var reqErr *RequestError
		if !errors.As(err, &reqErr) {
			t.Fatal(err)
		}
		if reqErr.Code != "bad[31m" || len(reqErr.Description) > maxDescriptionLen {
			t.Errorf("Code = %q, len(Description) = %d", reqErr.Code, len(reqErr.Description))
		}
	})
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		value string
		want  time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"30", 30 * time.Second},
		{" 30 ", 30 * time.Second},
		{"-1", 0},
		{"1.5", 0},
		{"999999999999999999999", longestDuration},
		{"172800", 48 * time.Hour}, // as sent: the cache caps what it obeys
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{now.Add(48 * time.Hour).Format(http.TimeFormat), 48 * time.Hour},
		{"Fri, 31 Dec 9999 23:59:59 GMT", longestDuration},
		{"tomorrow", 0},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(http.Header{"Retry-After": {tt.value}}, now); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", tt.value, got, tt.want)
		}
	}
}

func TestTokenFormattingRedacts(t *testing.T) {
	token := Token{
		AccessToken: sampleToken,
		TokenType:   "Bearer",
		ExpiresIn:   time.Hour,
		ExpiresAt:   time.Now().Add(time.Hour),
	}
	type wrapper struct {
		Tok  Token
		Ptr  *Token
		List []*Token
	}
	outputs := map[string]string{}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
		outputs[verb+" value"] = fmt.Sprintf(verb, token)
		outputs[verb+" pointer"] = fmt.Sprintf(verb, &token)
		outputs[verb+" nested"] = fmt.Sprintf(verb, wrapper{Tok: token, Ptr: &token, List: []*Token{&token}})
	}
	outputs["String"] = token.String()
	outputs["GoString"] = token.GoString()
	outputs["Sprint"] = fmt.Sprint(token, &token)
	outputs["Errorf"] = fmt.Errorf("got %v", &token).Error()
	for name, v := range map[string]any{"value": token, "pointer": &token, "nested": wrapper{Tok: token, Ptr: &token, List: []*Token{&token}}} {
		raw, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("json %s: %v", name, err)
		}
		outputs["json "+name] = string(raw)
	}

	core, logs := observer.New(zap.DebugLevel)
	zap.New(core).Info("token", zap.Any("token", token), zap.Any("ptr", &token), zap.Object("obj", token), zap.Stringer("str", token))
	for _, entry := range logs.All() {
		for k, v := range entry.ContextMap() {
			outputs["zap "+k] = fmt.Sprintf("%v", v)
		}
	}

	for name, out := range outputs {
		if strings.Contains(out, sampleToken) || strings.Contains(out, "eyJ") {
			t.Errorf("%s leaks the access token: %s", name, out)
		}
	}
	if !strings.Contains(token.String(), "[REDACTED]") || !strings.Contains(token.String(), "Bearer") {
		t.Errorf("String() = %q, want a redacted summary", token.String())
	}
}

func TestTokenJSONKeepsTheMetadata(t *testing.T) {
	expiresAt := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	raw, err := json.Marshal(Token{AccessToken: sampleToken, TokenType: "Bearer", ExpiresIn: time.Hour, ExpiresAt: expiresAt, RefreshIn: 30 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"access_token":"[REDACTED]","token_type":"Bearer","expires_in":3600,"expires_at":"2026-11-26T12:00:00Z","refresh_in":1800}`
	if string(raw) != want {
		t.Errorf("json = %s, want %s", raw, want)
	}
}
