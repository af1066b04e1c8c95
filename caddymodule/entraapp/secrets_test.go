package entraapp

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
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
