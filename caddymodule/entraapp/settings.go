package entraapp

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/tokencache/redisstore"
)

// settings are the entra app's configuration resolved and checked. They
// hold secrets: never logged.
type settings struct {
	cache        *cacheSettings
	applications []resolvedApplication
}

// resolveSettings resolves and checks the whole app without side effects
// (the CLI calls it too). Errors carry MICROSOFT_PROVIDER_INVALID_CONFIG and
// name the field, never a value.
func (a *App) resolveSettings(repl *caddy.Replacer) (*settings, error) {
	cache, err := a.cacheSettings(repl)
	if err != nil {
		return nil, err
	}
	applications, err := a.resolveApplications(repl)
	if err != nil {
		return nil, err
	}
	if cache.Redis != nil && a.Redis.Entra != nil {
		if err := a.resolveRedisEntra(repl, cache, applications); err != nil {
			return nil, err
		}
	}
	return &settings{cache: cache, applications: applications}, nil
}

// resolvedApplication is an application with its identity inherited and
// resolved, and its token client.
type resolvedApplication struct {
	Name       string
	Scopes     []string
	Config     entra.Config // holds the credential
	Client     *entra.Client
	OnBehalfOf *onBehalfOf // set for an on-behalf-of application
}

// resolveApplications resolves and checks every application, sorted by name.
func (a *App) resolveApplications(repl *caddy.Replacer) ([]resolvedApplication, error) {
	if len(a.Applications) == 0 {
		return nil, ConfigError("application", "at least one application is required")
	}
	apps := make([]resolvedApplication, 0, len(a.Applications))
	for _, name := range a.ApplicationNames() {
		app := a.Applications[name]
		scopes, err := validateApplication(name, app)
		if err != nil {
			return nil, err
		}
		identity, field := a.IdentityConfig, ""
		if !app.IdentityConfig.isZero() {
			field = "application " + name + ": "
			if identity, err = app.IdentityConfig.inherit(a.IdentityConfig, field); err != nil {
				return nil, err
			}
		}
		cfg, err := identity.clientConfig(repl, field)
		if err != nil {
			return nil, err
		}
		cfg.ClientCapabilities = a.ClientCapabilities
		if len(app.ClientCapabilities) > 0 { // [] is none of its own, as absent: omitempty drops it
			cfg.ClientCapabilities = app.ClientCapabilities
		}
		cfg.Logger = a.credentialLogger(zap.String("application", name))
		if cfg.ManagedIdentity != nil && len(scopes) != 1 {
			return nil, ConfigError("application "+name+": scope", "a managed identity gets a token for exactly one resource; "+
				"configure one scope per application")
		}
		client, err := entra.NewClient(cfg)
		var ce *entra.ConfigError
		if field != "" && cfg.ManagedIdentity != nil && len(app.ClientCapabilities) == 0 && errors.As(err, &ce) && ce.Field == "client_capabilities" {
			return nil, ConfigError(field+"client_capabilities", "the entra block's, which it inherits, "+ce.Reason+
				": declare client_capabilities on the applications that take them instead")
		}
		if err != nil {
			return nil, prefixConfigError(field, err)
		}
		resolved := resolvedApplication{Name: name, Scopes: scopes, Config: cfg, Client: client}
		if app.OnBehalfOf != nil {
			field = "application " + name + ": "
			if resolved.OnBehalfOf, err = resolveOnBehalfOf(app.OnBehalfOf, cfg, client, repl, field); err != nil {
				return nil, err
			}
			if app.Prefetch != nil && *app.Prefetch {
				return nil, ConfigError(field+"prefetch", "an on-behalf-of application has no token of its own to prefetch: "+
					"each is exchanged for a request's user token")
			}
		}
		apps = append(apps, resolved)
	}
	return apps, nil
}

// credentialLogger is what a token client tells of its credential (rotated
// certificate files that do not load), to the app's logger with identity
// fields; nil, for no logging, without one (the CLI).
func (a *App) credentialLogger(identity zap.Field) *zap.Logger {
	if a.logger == nil {
		return nil
	}
	return a.logger.With(identity)
}

// cacheSettings is what a cache is made of. It holds secrets: hashed into
// the pool key, never logged.
type cacheSettings struct {
	RefreshWindow    time.Duration
	RefreshAhead     float64
	WaitTimeout      time.Duration
	FetchConcurrency int // 0: the default
	Redis            *redisstore.Options
	// RedisTLS and RedisEntra describe, for the pool key, what does not
	// marshal: the CA file digest and server name; the identity, its
	// credential's fingerprint and the connection age.
	RedisTLS   string
	RedisEntra string
}

// cacheSettings validates and resolves the store and refresh settings.
func (a *App) cacheSettings(repl *caddy.Replacer) (*cacheSettings, error) {
	s := &cacheSettings{
		RefreshWindow:    time.Duration(a.RefreshWindow),
		RefreshAhead:     a.RefreshAhead,
		WaitTimeout:      time.Duration(a.WaitTimeout),
		FetchConcurrency: a.TokenRequestConcurrency,
	}
	switch {
	case s.RefreshWindow < 0:
		return nil, ConfigError("refresh_window", "must not be negative")
	case s.RefreshWindow > MaxRefreshWindow:
		return nil, ConfigError("refresh_window", fmt.Sprintf("must be at most %s: Entra ID tokens live 60 to 90 minutes, "+
			"and a token with less than refresh_window left is never used", MaxRefreshWindow))
	case s.RefreshAhead < 0 || s.RefreshAhead >= 1:
		return nil, ConfigError("refresh_ahead", "must be a fraction of the lifetime, above 0 and below 1")
	case s.RefreshWindow > 0 && s.RefreshWindow < MinRefreshWindow:
		return nil, ConfigError("refresh_window", fmt.Sprintf("must be at least %s (a token with less left may expire "+
			"on its way downstream)", MinRefreshWindow))
	case s.WaitTimeout < 0:
		return nil, ConfigError("wait_timeout", "must not be negative")
	case s.WaitTimeout > 0 && s.WaitTimeout < MinWaitTimeout:
		return nil, ConfigError("wait_timeout", fmt.Sprintf("must be at least %s (no token request is answered sooner: "+
			"every request finding no usable token would fail)", MinWaitTimeout))
	case s.FetchConcurrency < 0:
		return nil, ConfigError("token_request_concurrency", "must not be negative")
	}
	if s.RefreshWindow == 0 {
		s.RefreshWindow = DefaultRefreshWindow
	}
	if a.Redis != nil {
		opts, tlsDescription, err := a.Redis.options(repl)
		if err != nil {
			return nil, err
		}
		s.Redis, s.RedisTLS = opts, tlsDescription
	}
	return s, nil
}

// options resolves the redis block, and describes its TLS settings for the
// pool key.
func (rc *RedisConfig) options(repl *caddy.Replacer) (*redisstore.Options, string, error) {
	r := resolver{repl: repl, prefix: "redis "}
	opts := &redisstore.Options{
		URL:        r.value("url", rc.URL),
		MasterName: r.value("master_name", rc.MasterName),
		Username:   r.value("username", rc.Username),
		Password:   r.required("password", rc.Password),
		DB:         rc.DB,
		TLS:        rc.TLS,
		KeyPrefix:  rc.KeyPrefix,
		OpTimeout:  time.Duration(rc.Timeout),
	}
	var tlsDescription string
	if caFile := r.value("tls_ca", rc.TLSCA); caFile != "" || rc.TLSServerName != "" {
		tlsConfig, caDigest, err := redisTLSConfig(caFile, r.value("tls_server_name", rc.TLSServerName))
		if err != nil {
			return nil, "", err
		}
		opts.TLSConfig = tlsConfig
		tlsDescription = caDigest + "\n" + tlsConfig.ServerName
	}
	for i, addr := range rc.Addrs {
		if addr = r.value("addrs", addr); addr != "" {
			if !r.failed["addrs"] && !isHostPort(addr) {
				r.fail(fmt.Sprintf("addrs[%d]", i), "want host:port (a URL goes in the redis option itself)")
			}
			opts.Addrs = append(opts.Addrs, addr)
		}
	}
	for i, raw := range rc.EncryptionKeys {
		encoded := r.required(fmt.Sprintf("encryption_key #%d", i+1), raw)
		if r.err != nil {
			break
		}
		key, err := redisstore.ParseEncryptionKey(encoded)
		if err != nil {
			return nil, "", ConfigError(fmt.Sprintf("redis encryption_key #%d", i+1), err.Error())
		}
		if j := slices.IndexFunc(opts.EncryptionKeys, func(k []byte) bool { return bytes.Equal(k, key) }); j >= 0 {
			return nil, "", ConfigError(fmt.Sprintf("redis encryption_key #%d", i+1), fmt.Sprintf("the same key as #%d", j+1))
		}
		opts.EncryptionKeys = append(opts.EncryptionKeys, key)
	}
	if r.err != nil {
		return nil, "", r.err
	}
	switch {
	case opts.URL == "" && len(opts.Addrs) == 0:
		return nil, "", ConfigError("redis", "a URL or addrs is required"+placeholderHint(rc.URL))
	case opts.URL != "" && len(opts.Addrs) > 0:
		return nil, "", ConfigError("redis", "set either a URL or addrs, not both")
	case opts.OpTimeout < 0:
		return nil, "", ConfigError("redis timeout", "must not be negative")
	case opts.OpTimeout > 0 && opts.OpTimeout < MinRedisTimeout:
		return nil, "", ConfigError("redis timeout", fmt.Sprintf("must be at least %s (no Redis answers sooner)", MinRedisTimeout))
	case len(rc.EncryptionKeys) == 0 && !rc.InsecurePlaintext:
		return nil, "", ConfigError("redis encryption_key", "is required to share tokens through Redis: "+
			"without it any Redis writer can replace or withhold the tokens this sidecar injects. "+
			"Make one with `head -c 32 /dev/urandom | base64`, give it to every replica (e.g. encryption_key {env.ENTRA_REDIS_KEY}), "+
			"or state insecure_plaintext in the redis block to accept that risk")
	case len(rc.EncryptionKeys) > 0 && rc.InsecurePlaintext:
		return nil, "", ConfigError("redis insecure_plaintext", "cannot be combined with encryption_key: remove one of them")
	}
	return opts, tlsDescription, nil
}

// isHostPort reports whether addr is host:port with a port number: not a
// URL, whose password would be logged with the addresses at load, nor an
// address without a port, which never connects (Redis down for ever,
// silently).
func isHostPort(addr string) bool {
	if strings.Contains(addr, "://") || strings.Contains(addr, "@") {
		return false
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	number, err := strconv.ParseUint(port, 10, 16)
	return err == nil && number > 0
}

// redisTLSConfig verifies the server against caFile's CAs (default: the
// system roots) and serverName, if set. caDigest is the SHA-256 of the CAs
// loaded ("" for none): a rotated CA makes another cache.
func redisTLSConfig(caFile, serverName string) (cfg *tls.Config, caDigest string, err error) {
	cfg = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if caFile == "" {
		return cfg, "", nil
	}
	if err := entra.CheckFilePath("redis tls_ca", caFile); err != nil {
		return nil, "", ConfigError("redis tls_ca", err.(*entra.ConfigError).Reason)
	}
	pemData, err := os.ReadFile(caFile)
	if err != nil {
		return nil, "", ConfigError("redis tls_ca", "reading the CA file: "+entra.FileErrorKind(err))
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemData) {
		return nil, "", ConfigError("redis tls_ca", "the file holds no PEM certificate")
	}
	cfg.RootCAs = pool
	sum := sha256.Sum256(pemData)
	return cfg, hex.EncodeToString(sum[:]), nil
}

// placeholderHint names the placeholder an empty value came from.
func placeholderHint(raw string) string {
	if strings.Contains(raw, "{") {
		return fmt.Sprintf(" (%s resolved to an empty value)", raw)
	}
	return ""
}

// validateApplication checks an application's name and scopes.
func validateApplication(name string, app *Application) ([]string, error) {
	if name == "" || strings.ContainsFunc(name, unicode.IsSpace) || strings.ContainsAny(name, "{}") {
		return nil, ConfigError("application", fmt.Sprintf("invalid application name %q", name))
	}
	field := "application " + name + ": scope"
	if app == nil || len(app.Scopes) == 0 {
		return nil, ConfigError(field, "at least one scope is required")
	}
	for i, scope := range app.Scopes {
		if scope == "" || strings.ContainsFunc(scope, unicode.IsSpace) {
			return nil, ConfigError(field, fmt.Sprintf("invalid scope %q: must be non-empty and contain no whitespace", scope))
		}
		// The scopes are one space-separated value (RFC 6749 3.3), a set:
		// a repeated one asks for nothing more, and is likely a mistake
		// for another scope.
		if slices.Contains(app.Scopes[:i], scope) {
			return nil, ConfigError(field, fmt.Sprintf("duplicate scope %q: list each scope once", scope))
		}
	}
	return slices.Clone(app.Scopes), nil
}
