package entraapp

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

func TestLiteralSecretFieldsNamesFieldsNeverValues(t *testing.T) {
	app := &App{
		IdentityConfig: IdentityConfig{ClientSecret: "literal-secret-1"},
		Applications: map[string]*Application{
			"graph-api": {IdentityConfig: IdentityConfig{ClientSecret: "{env.GRAPH_SECRET}"}},
			"orders-api": {IdentityConfig: IdentityConfig{ClientCertificate: &ClientCertificateConfig{
				Certificate: "/etc/c.pem", KeyPassword: "literal-password-2"}}},
			"files-api": {IdentityConfig: IdentityConfig{ClientSecret: " {file./run/secrets/files} "}},
		},
		Redis: &RedisConfig{
			URL:            "redis://:literal-redis-3@redis:6379/0",
			Password:       "{env.REDIS_PASSWORD}",
			EncryptionKeys: []string{"{env.KEY}", "bGl0ZXJhbC1rZXktNA=="},
		},
	}
	got := app.literalSecretFields()
	want := []string{"client_secret", "application orders-api: client_certificate key_password",
		"redis url's password", "redis encryption_key"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("literal secret fields = %q, want %q", got, want)
	}
	for _, field := range got {
		if strings.Contains(field, "literal") || strings.Contains(field, "bGl0") {
			t.Errorf("field %q holds a value", field)
		}
	}

	placeholders := &App{
		IdentityConfig: IdentityConfig{ClientSecret: "{env.ENTRA_CLIENT_SECRET}"},
		Redis:          &RedisConfig{URL: "{env.REDIS_URL}", EncryptionKeys: []string{"{file./run/key}"}},
	}
	if got := placeholders.literalSecretFields(); len(got) != 0 {
		t.Errorf("placeholders reported as literal: %q", got)
	}
	noPassword := &App{Redis: &RedisConfig{URL: "redis://redis:6379/0"}}
	if got := noPassword.literalSecretFields(); len(got) != 0 {
		t.Errorf("a URL without a password reported: %q", got)
	}
}

// A config whose variables are all unset names every missing field in one
// error, not one per run, and never a value.
func TestEveryMissingIdentityFieldIsNamedAtOnce(t *testing.T) {
	id := IdentityConfig{TenantID: "{env.ENTRA_TEST_UNSET_TENANT}", ClientID: "{env.ENTRA_TEST_UNSET_CLIENT}",
		ClientSecret: "{env.ENTRA_TEST_UNSET_SECRET}"}
	_, err := id.clientConfig(caddy.NewReplacer(), "")
	if err == nil {
		t.Fatal("a config with every variable unset loaded")
	}
	for _, want := range []string{"client_secret: is required", "client_id: is required", "tenant_id: is required", "ENTRA_TEST_UNSET_SECRET"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	// An unknown placeholder is said once, not also as missing.
	id.ClientSecret, id.ClientID, id.TenantID = "{nope.secret}", "{nope.id}", "{nope.tenant}"
	_, err = id.clientConfig(caddy.NewReplacer(), "")
	for _, field := range []string{"client_secret", "client_id", "tenant_id"} {
		if err == nil || strings.Count(err.Error(), field+":") != 1 {
			t.Errorf("unknown placeholders: %v, want %s named once", err, field)
		}
	}
}

// A {file.*} placeholder (or a variable) giving a file's content where a
// path belongs is refused at load, naming the field and quoting none of
// the content: os.ReadFile's error quoted the "path", so a PEM private key
// or a federated token stood in the load error (and, for the token, in
// every request's answer and the logs).
func TestAFileContentGivenForAPathIsRefusedUnquoted(t *testing.T) {
	const keyBody = "MIIEsecretPrivateKeyBody"
	pemFile := filepath.Join(t.TempDir(), "both.pem")
	pemContent := "-----BEGIN CERTIFICATE-----\nMIIBcertificate\n-----END CERTIFICATE-----\n" +
		"-----BEGIN RSA PRIVATE KEY-----\n" + keyBody + "\n-----END RSA PRIVATE KEY-----\n"
	if err := os.WriteFile(pemFile, []byte(pemContent), 0o600); err != nil {
		t.Fatal(err)
	}
	const jwtSignature = "SIGNATUREofTheFederatedToken"
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0."+jwtSignature+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ENTRA_TEST_KEY_CONTENT", pemContent)
	for _, tc := range []struct {
		name, field string
		id          IdentityConfig
	}{
		{"certificate", "client_certificate", IdentityConfig{ClientCertificate: &ClientCertificateConfig{Certificate: "{file." + pemFile + "}"}}},
		{"key", "client_certificate", IdentityConfig{ClientCertificate: &ClientCertificateConfig{
			Certificate: pemFile, Key: "{env.ENTRA_TEST_KEY_CONTENT}"}}},
		{"mutual TLS", "client_certificate", IdentityConfig{ClientAuth: "tls_client_auth", TokenEndpoint: "https://idp.example/token",
			ClientCertificate: &ClientCertificateConfig{Certificate: "{file." + pemFile + "}"}}},
		{"federated token", "federated_token_file", IdentityConfig{FederatedTokenFile: "{file." + tokenFile + "}"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.id.TenantID, tc.id.ClientID = "00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-0000000000c1"
			app := &App{IdentityConfig: tc.id, Applications: map[string]*Application{"a": {Scopes: []string{"api://a/.default"}}}}
			err := app.ProvisionForTest(zap.NewNop())
			if err == nil {
				_ = app.Cleanup()
				t.Fatal("a file's content given for a path loaded")
			}
			for _, secret := range []string{keyBody, jwtSignature, "BEGIN", "eyJ"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("the load error quotes the file's content (%q): %v", secret, err)
				}
			}
			if !strings.Contains(err.Error(), tc.field+": takes a file path") {
				t.Errorf("the load error = %v, want it to name %s and say it takes a path", err, tc.field)
			}
		})
	}
}

// A key_password (or key) whose placeholder resolves to nothing is refused
// naming the placeholder, not reported as a wrong password.
func TestAnUnsetKeyPasswordNamesItsPlaceholder(t *testing.T) {
	id := IdentityConfig{TenantID: "00000000-0000-4000-8000-000000000001", ClientID: "00000000-0000-4000-8000-0000000000c1",
		ClientCertificate: &ClientCertificateConfig{Certificate: "/etc/c.pfx", Key: "{env.ENTRA_TEST_UNSET_KEY}",
			KeyPassword: "{env.ENTRA_TEST_UNSET_PFX_PASSWORD}"}}
	_, err := id.clientConfig(caddy.NewReplacer(), "")
	for _, want := range []string{"ENTRA_TEST_UNSET_PFX_PASSWORD", "ENTRA_TEST_UNSET_KEY"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("clientConfig() = %v, want an error naming %s", err, want)
		}
	}
}
