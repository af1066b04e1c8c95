package entraapp

import (
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// secretPlaceholder is a value that Caddy resolves at provision time: the
// config, GET /config/ and autosave.json then hold the placeholder, never
// the secret.
var secretPlaceholder = regexp.MustCompile(`^\{(env|file)\.[^{}]+\}$`)

// literalSecretFields names the secret fields whose value is written in the
// config itself (literally, or as a {$VAR} the Caddyfile adapter already
// substituted) instead of as an {env.*} or {file.*} placeholder. Names only:
// never a value.
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
		check("redis url's password", urlPassword(rc.URL))
		for _, key := range rc.EncryptionKeys {
			check("redis encryption_key", key)
		}
	}
	return slices.Compact(fields)
}

// urlPassword is the password a redis URL carries, if any.
func urlPassword(raw string) string {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || u.User == nil {
		return ""
	}
	password, _ := u.User.Password()
	return password
}

// isLiteralSecret reports whether a secret is written in the config itself
// (literally, or as a {$VAR} the Caddyfile adapter already substituted)
// instead of as an {env.*} or {file.*} placeholder.
func isLiteralSecret(value string) bool {
	return value != "" && !secretPlaceholder.MatchString(strings.TrimSpace(value))
}

// warnLiteralSecret warns, naming the field (never its value), that a
// secret would be shown by the admin API's GET /config/ and written to
// autosave.json.
func warnLiteralSecret(logger *zap.Logger, field string) {
	logger.Warn("a secret is written in the config: GET /config/ and autosave.json show it; "+
		"use an {env.*} or {file.*} placeholder, resolved at load",
		zap.String("field", field))
}

// ResolveSecret resolves a secret a handler is configured with: an {env.*}
// or {file.*} placeholder (or the value itself, see WarnLiteralSecret).
// Errors name field, never a value; a secret that resolves to nothing is
// one.
func ResolveSecret(field, raw string) (string, error) {
	r := resolver{repl: caddy.NewReplacer()}
	secret := r.required(field, raw)
	return secret, r.err
}

// WarnLiteralSecret is warnLiteralSecret when the secret raw of field is
// written in the config itself (isLiteralSecret).
func WarnLiteralSecret(logger *zap.Logger, field, raw string) {
	if isLiteralSecret(raw) {
		warnLiteralSecret(logger, field)
	}
}

// warnLiteralSecrets warns about each secret field of the app written in
// the config itself.
func (a *App) warnLiteralSecrets() {
	for _, field := range a.literalSecretFields() {
		warnLiteralSecret(a.logger, field)
	}
}
