package entratoken

import (
	"strings"
	"testing"

	"github.com/caddy-entra/caddy-entra/internal/apptest"
)

// client_auth in JSON is checked when the config loads: an unknown value,
// basic without a client secret, mutual TLS without a certificate or at
// Entra, are refused naming the field and never the secret.
func TestClientAuthCheckedAtLoad(t *testing.T) {
	for _, tt := range []struct {
		name, entraApp string
		wantErr        []string
	}{
		{"basic", `{"tenant_id": "t", "client_id": "00000000-0000-4000-8000-0000000000c1", "client_secret": "s3cr3t-basic", "client_auth": "basic", "applications": {"a": {"scopes": ["x/.default"]}}}`, nil},
		{"post", `{"tenant_id": "t", "client_id": "00000000-0000-4000-8000-0000000000c1", "client_secret": "s3cr3t-basic", "client_auth": "post", "applications": {"a": {"scopes": ["x/.default"]}}}`, nil},
		{"unknown", `{"tenant_id": "t", "client_id": "00000000-0000-4000-8000-0000000000c1", "client_secret": "s3cr3t-basic", "client_auth": "client_secret_jwt", "applications": {"a": {"scopes": ["x/.default"]}}}`,
			[]string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "client_auth", "must be post, basic, tls_client_auth or self_signed_tls_client_auth"}},
		{"basic without a secret", `{"tenant_id": "t", "client_id": "00000000-0000-4000-8000-0000000000c1", "federated_token_file": "/token", "client_auth": "basic", "applications": {"a": {"scopes": ["x/.default"]}}}`,
			[]string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "client_auth", "needs client_secret"}},
		{"tls_client_auth at Entra", `{"tenant_id": "t", "client_id": "00000000-0000-4000-8000-0000000000c1", "client_certificate": {"certificate": "/nonexistent/cert.pem"}, "client_auth": "tls_client_auth", "applications": {"a": {"scopes": ["x/.default"]}}}`,
			[]string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "client_auth", "Entra ID does not offer mutual TLS"}},
		{"self_signed_tls_client_auth without a certificate", `{"token_endpoint": "https://idp.example/token", "client_id": "00000000-0000-4000-8000-0000000000c1", "client_secret": "s3cr3t-basic", "client_auth": "self_signed_tls_client_auth", "applications": {"a": {"scopes": ["x"]}}}`,
			[]string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "client_auth", "needs client_certificate"}},
		{"an application's basic without a secret", `{"tenant_id": "t", "client_id": "00000000-0000-4000-8000-0000000000c1", "client_secret": "s3cr3t-basic", "applications": {"a": {"scopes": ["x/.default"],
			"client_id": "c2", "federated_token_file": "/token", "client_auth": "basic"}}}`,
			[]string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "application a", "client_auth", "needs client_secret"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := apptest.ValidateConfig(t, apptest.JSONConfig(tt.entraApp, "a"))
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("valid config rejected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("config accepted, want an error")
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
			if strings.Contains(err.Error(), "s3cr3t-basic") {
				t.Error("the error holds a secret")
			}
		})
	}
}
