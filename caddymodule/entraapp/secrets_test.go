package entraapp

import (
	"strings"
	"testing"
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
