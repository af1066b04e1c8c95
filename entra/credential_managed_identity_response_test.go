package entra

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseManagedIdentityResponse(t *testing.T) {
	sentAt := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	in := func(d time.Duration) string { return strconv.FormatInt(sentAt.Add(d).Unix(), 10) }
	tests := []struct {
		name       string
		body       string
		wantIn     time.Duration
		wantAt     time.Time
		wantErrSub string
	}{
		{"IMDS shape", `{"access_token":"tk-9f3Q","client_id":"c","expires_in":"3599","expires_on":"` + in(time.Hour) + `","ext_expires_in":"3599","not_before":"1","resource":"r","token_type":"Bearer"}`, 3599 * time.Second, sentAt.Add(3599 * time.Second), ""},
		{"expires_in number", `{"access_token":"tk-9f3Q","expires_in":600}`, 10 * time.Minute, sentAt.Add(10 * time.Minute), ""},
		// With both, the earlier end: a cached token's expires_in may be its
		// original lifetime (azure-sdk-for-js #6643).
		{"expires_in earlier than expires_on", `{"access_token":"tk-9f3Q","expires_in":"600","expires_on":"` + in(time.Hour) + `"}`, 10 * time.Minute, sentAt.Add(10 * time.Minute), ""},
		{"expires_on earlier than a stale expires_in", `{"access_token":"tk-9f3Q","expires_in":"86399","expires_on":"` + in(time.Hour) + `"}`, time.Hour, sentAt.Add(time.Hour), ""},
		{"expires_on date earlier than expires_in", `{"access_token":"tk-9f3Q","expires_in":86399,"expires_on":"2025-06-01 12:30:00"}`, 30 * time.Minute, sentAt.Add(30 * time.Minute), ""},
		{"stale expires_in, expires_on past", `{"access_token":"tk-9f3Q","expires_in":"86399","expires_on":"` + in(-time.Minute) + `"}`, 0, time.Time{}, "expires_on is not in the future"},
		{"good expires_in, malformed expires_on", `{"access_token":"tk-9f3Q","expires_in":"600","expires_on":"tomorrow"}`, 10 * time.Minute, sentAt.Add(10 * time.Minute), ""},
		{"App Service: expires_on string", `{"access_token":"tk-9f3Q","expires_on":"` + in(time.Hour) + `","resource":"r","token_type":"Bearer","client_id":"c"}`, time.Hour, sentAt.Add(time.Hour), ""},
		{"expires_on number", `{"access_token":"tk-9f3Q","expires_on":` + in(30*time.Minute) + `}`, 30 * time.Minute, sentAt.Add(30 * time.Minute), ""},
		{"expires_on 2017 date", `{"access_token":"tk-9f3Q","expires_on":"06/01/2025 01:00:00 PM +00:00"}`, time.Hour, sentAt.Add(time.Hour), ""},
		// The dates MSAL Go reads; without a zone, UTC.
		{"expires_on RFC 3339, fraction and offset", `{"access_token":"tk-9f3Q","expires_on":"2025-06-01T13:00:00.0000000+00:00"}`, time.Hour, sentAt.Add(time.Hour), ""},
		{"expires_on RFC 3339, other offset", `{"access_token":"tk-9f3Q","expires_on":"2025-06-01T15:00:00.0000000+02:00"}`, time.Hour, sentAt.Add(time.Hour), ""},
		{"expires_on RFC 3339 UTC", `{"access_token":"tk-9f3Q","expires_on":"2025-06-01T13:00:00Z"}`, time.Hour, sentAt.Add(time.Hour), ""},
		{"expires_on yyyy-MM-dd HH:mm:ss", `{"access_token":"tk-9f3Q","expires_on":"2025-06-01 13:00:00"}`, time.Hour, sentAt.Add(time.Hour), ""},
		{"expires_on MM/dd/yyyy HH:mm:ss", `{"access_token":"tk-9f3Q","expires_on":"06/01/2025 13:00:00"}`, time.Hour, sentAt.Add(time.Hour), ""},
		{"expires_on date in the past", `{"access_token":"tk-9f3Q","expires_on":"2025-06-01 11:59:59"}`, 0, time.Time{}, "expires_on is not in the future"},
		{"expires_on date far away", `{"access_token":"tk-9f3Q","expires_on":"9999-12-31T23:59:59Z"}`, 0, time.Time{}, "expires_on is out of range"},
		{"malformed expires_in, good expires_on", `{"access_token":"tk-9f3Q","expires_in":"soon","expires_on":"` + in(time.Hour) + `"}`, time.Hour, sentAt.Add(time.Hour), ""},
		{"no lifetime", `{"access_token":"tk-9f3Q"}`, 0, time.Time{}, "expires_in and expires_on are missing"},
		{"malformed expires_in only", `{"access_token":"tk-9f3Q","expires_in":"soon"}`, 0, time.Time{}, "expires_in is not a number"},
		{"expires_on in the past", `{"access_token":"tk-9f3Q","expires_on":"` + in(-time.Minute) + `"}`, 0, time.Time{}, "expires_on is not in the future"},
		{"expires_on garbage", `{"access_token":"tk-9f3Q","expires_on":"tomorrow"}`, 0, time.Time{}, "expires_on is not a number or date"},
		{"expires_on huge", `{"access_token":"tk-9f3Q","expires_on":1e300}`, 0, time.Time{}, "expires_on is out of range"},
		{"no access_token", `{"expires_in":60}`, 0, time.Time{}, "access_token is missing"},
		{"not bearer", `{"access_token":"tk-9f3Q","expires_in":60,"token_type":"pop"}`, 0, time.Time{}, "token_type is not Bearer"},
		{"not JSON", `<html/>`, 0, time.Time{}, "not a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token, err := ParseManagedIdentityResponse(200, nil, []byte(tt.body), sentAt)
			if tt.wantErrSub != "" {
				if err == nil || !errors.Is(err, ErrMalformedResponse) || !strings.Contains(err.Error(), tt.wantErrSub) {
					t.Fatalf("error = %v, want malformed: %s", err, tt.wantErrSub)
				}
				if strings.Contains(err.Error(), "tk-9f3Q") {
					t.Errorf("message %q contains the token", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if token.AccessToken != "tk-9f3Q" || token.ExpiresIn != tt.wantIn || !token.ExpiresAt.Equal(tt.wantAt) || token.TokenType != "Bearer" {
				t.Errorf("token = %v, want ExpiresIn %s ExpiresAt %s", token, tt.wantIn, tt.wantAt)
			}
		})
	}
}

func TestParseManagedIdentityErrors(t *testing.T) {
	_, err := ParseManagedIdentityResponse(400, nil, []byte(`{"error":"invalid_request","error_description":"Identity not found"}`), time.Now())
	var reqErr *RequestError
	if !errors.As(err, &reqErr) || reqErr.Code != "invalid_request" || reqErr.Description != "Identity not found" || !reqErr.PermanentFailure() {
		t.Errorf("IMDS error: %v", err)
	}
	_, err = ParseManagedIdentityResponse(500, http.Header{"Retry-After": {"3"}}, []byte(`{"statusCode":500,"message":"Failed to get token","correlationId":"7f3e0c2a-0000-4000-8000-000000000001"}`), time.Now())
	if !errors.As(err, &reqErr) || reqErr.Description != "Failed to get token" || reqErr.PermanentFailure() || reqErr.RetryAfterHint() != 3*time.Second ||
		reqErr.CorrelationID != "7f3e0c2a-0000-4000-8000-000000000001" {
		t.Errorf("App Service error: %v", err)
	}
	_, err = ParseManagedIdentityResponse(410, nil, []byte(`gone`), time.Now())
	if !errors.As(err, &reqErr) || reqErr.PermanentFailure() || !errors.Is(err, ErrMalformedResponse) {
		t.Errorf("IMDS 410 while starting: %v", err)
	}
}
