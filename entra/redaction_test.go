package entra_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/entra"
)

// echoingClient returns a client with secret whose token endpoint answers
// 400 with the error fields fields (and headers headers).
func echoingClient(t *testing.T, secret string, fields map[string]any, headers map[string]string) *entra.Client {
	t.Helper()
	body, err := json.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range headers {
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	client, err := entra.NewClient(entra.Config{ClientID: testClientID, ClientSecret: secret, TokenEndpoint: srv.URL + "/token"})
	if err != nil {
		t.Fatal(err)
	}
	return client
}

// assertNoPartOf fails if any 5-byte piece of secret appears in text.
func assertNoPartOf(t *testing.T, what, text, secret string) {
	t.Helper()
	for i := 0; i+5 <= len(secret); i++ {
		if piece := secret[i : i+5]; strings.Contains(text, piece) {
			t.Errorf("%s contains %q, a piece of the secret: %s", what, piece, text)
			return
		}
	}
}

// TestSecretStraddlingTheCutIsRedacted: an echoed secret that crosses the
// 400-byte cut of error_description (or the 128-byte cut of trace_id) must
// be masked before the cut, so that no prefix of it survives.
func TestSecretStraddlingTheCutIsRedacted(t *testing.T) {
	const secret = "Sup3rS3cretV4lue-QQ_zz9kk"
	desc := "AADSTS7000215: " + strings.Repeat(".", 400-len("AADSTS7000215: ")-10) + secret + " trailing"
	trace := strings.Repeat("-", 128-8) + secret
	client := echoingClient(t, secret, map[string]any{
		"error": "invalid_client", "error_description": desc, "error_codes": []int{7000215}, "trace_id": trace,
	}, nil)
	_, err := client.Token(context.Background(), []string{graphScope})
	var reqErr *entra.RequestError
	if !errors.As(err, &reqErr) {
		t.Fatalf("Token() error = %v, want a *RequestError", err)
	}
	for what, text := range map[string]string{"Error()": err.Error(), "Description": reqErr.Description, "TraceID": reqErr.TraceID} {
		assertNoPartOf(t, what, text, secret)
	}
	if !strings.Contains(reqErr.Description, "[REDACTED]") {
		t.Errorf("Description %q: want the secret masked, not cut off", reqErr.Description)
	}
	if len(reqErr.Description) > 400 || len(reqErr.TraceID) > 128 {
		t.Errorf("fields not cut to length: %d, %d bytes", len(reqErr.Description), len(reqErr.TraceID))
	}
}

// TestEscapedSecretIsRedacted: an endpoint echoing the form body shows the
// secret query-escaped; one echoing a path shows it path-escaped.
func TestEscapedSecretIsRedacted(t *testing.T) {
	const secret = "s3cr3t/+ &=?%~x{y}" // escapes differently in a query and a path
	queryForm, pathForm := url.QueryEscape(secret), url.PathEscape(secret)
	if queryForm == secret || pathForm == secret || queryForm == pathForm {
		t.Fatalf("test secret escapes too plainly: %q %q", queryForm, pathForm)
	}
	client := echoingClient(t, secret, map[string]any{
		"error":             "invalid_request",
		"error_description": "you sent client_secret=" + queryForm + "&grant_type=client_credentials",
		"trace_id":          "/echo/" + pathForm,
		"correlation_id":    "raw " + secret,
	}, map[string]string{"X-Ms-Request-Id": queryForm})
	_, err := client.Token(context.Background(), []string{graphScope})
	var reqErr *entra.RequestError
	if !errors.As(err, &reqErr) {
		t.Fatalf("Token() error = %v, want a *RequestError", err)
	}
	for _, form := range []string{secret, queryForm, pathForm, "s3cr3t"} {
		if strings.Contains(err.Error(), form) {
			t.Errorf("error contains the secret as %q: %s", form, err)
		}
	}
	for what, field := range map[string]string{"Description": reqErr.Description, "TraceID": reqErr.TraceID, "CorrelationID": reqErr.CorrelationID} {
		if !strings.Contains(field, "[REDACTED]") {
			t.Errorf("%s = %q, want the secret masked", what, field)
		}
	}
}

// TestManagedIdentityHeaderRedactedBeforeCut: the App Service identity
// header, echoed across the cut of "message", does not survive in part.
func TestManagedIdentityHeaderRedactedBeforeCut(t *testing.T) {
	const header = "IdH3ad3r-S3cret-0123456789"
	msg := strings.Repeat(".", 400-10) + header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		body, _ := json.Marshal(map[string]string{"message": msg})
		_, _ = w.Write(body)
	}))
	defer srv.Close()
	client, err := entra.NewClient(entra.Config{Timeout: 5 * time.Second, ManagedIdentity: &entra.ManagedIdentityCredential{
		IdentityEndpoint: srv.URL + "/msi/token", IdentityHeader: header,
	}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.Token(context.Background(), []string{graphScope})
	var reqErr *entra.RequestError
	if !errors.As(err, &reqErr) {
		t.Fatalf("Token() error = %v, want a *RequestError", err)
	}
	assertNoPartOf(t, "Error()", err.Error(), header)
	if !strings.Contains(reqErr.Description, "[REDACTED]") {
		t.Errorf("Description %q: want the header masked", reqErr.Description)
	}
}

func TestRequestErrorHTTPStatus(t *testing.T) {
	var withStatus interface{ HTTPStatus() int } = &entra.RequestError{StatusCode: 503}
	if got := withStatus.HTTPStatus(); got != 503 {
		t.Errorf("HTTPStatus() = %d, want 503", got)
	}
	if got := (&entra.RequestError{Err: context.DeadlineExceeded}).HTTPStatus(); got != 0 {
		t.Errorf("HTTPStatus() without a response = %d, want 0", got)
	}
}
