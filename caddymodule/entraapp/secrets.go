package entraapp

import (
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// secretPlaceholder is resolved at provision time, so the config (GET
// /config/, autosave.json) holds the placeholder, never the secret.
var secretPlaceholder = regexp.MustCompile(`^\{(env|file)\.[^{}]+\}$`)

// literalSecretFields names (never shows) the secret fields written in the
// config itself, literally or as a {$VAR} the adapter already substituted.
func (a *App) literalSecretFields() []string {
	var fields []string
	check := func(field, value string) {
		if isLiteralSecret(value) {
			fields = append(fields, field)
		}
	}
	identity := func(prefix string, id *IdentityConfig) {
		check(prefix+"client_secret", id.ClientSecret)
		if cc := id.ClientCertificate; cc != nil {
			check(prefix+"client_certificate key_password", cc.KeyPassword)
		}
	}
	identity("", &a.IdentityConfig)
	for _, name := range a.ApplicationNames() {
		if app := a.Applications[name]; app != nil {
			identity("application "+name+": ", &app.IdentityConfig)
		}
	}
	if rc := a.Redis; rc != nil {
		check("redis password", rc.Password)
		password := ""
		if u, err := url.Parse(strings.TrimSpace(rc.URL)); err == nil && u.User != nil {
			password, _ = u.User.Password()
		}
		check("redis url's password", password)
		for _, key := range rc.EncryptionKeys {
			check("redis encryption_key", key)
		}
	}
	return slices.Compact(fields)
}

func isLiteralSecret(value string) bool {
	return value != "" && !secretPlaceholder.MatchString(strings.TrimSpace(value))
}

// ResolveSecret resolves a handler's secret (a placeholder, or the value
// itself). Errors name field, never a value; resolving to nothing is one.
func ResolveSecret(field, raw string) (string, error) {
	r := resolver{repl: caddy.NewReplacer()}
	secret := r.required(field, raw)
	return secret, r.err
}

// WarnLiteralSecret warns, naming field (never its value), when raw is
// written in the config itself.
func WarnLiteralSecret(logger *zap.Logger, field, raw string) {
	if isLiteralSecret(raw) {
		warnLiteralSecret(logger, field)
	}
}

func (a *App) warnLiteralSecrets() {
	for _, field := range a.literalSecretFields() {
		warnLiteralSecret(a.logger, field)
	}
}

func warnLiteralSecret(logger *zap.Logger, field string) {
	logger.Warn("a secret is written in the config: GET /config/, autosave.json and Caddy's debug log of the config show it; "+
		"use an {env.*} or {file.*} placeholder, resolved at load", zap.String("field", field))
}
