// Package caddymodule plugs the Entra ID token injector into Caddy: the entra
// app holds the global configuration, the token clients and the token cache;
// the entra_token HTTP handler injects a bearer token into requests on their
// way downstream. It is the only package of the project that imports Caddy.
package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/tokencache"
)

func init() {
	caddy.RegisterModule(App{})
}

// DefaultRefreshWindow is the refresh_window used when none is configured: a
// token with this much or less left is never injected.
const DefaultRefreshWindow = 60 * time.Second

// App is the entra app: the global Entra ID configuration shared by every
// entra_token handler. It owns the token clients and the token cache.
//
// Secrets may be given as {env.*} or {file.*} placeholders; they are resolved
// when the app is provisioned, so the JSON config (and the admin API's
// GET /config/) shows the placeholder, not the secret.
type App struct {
	// TenantID is the directory (tenant) ID or a verified domain of the tenant
	// that issues the tokens. Required unless token_endpoint is set.
	TenantID string `json:"tenant_id,omitempty"`

	// ClientID is the application (client) ID of the app registration that
	// requests tokens. Required.
	ClientID string `json:"client_id,omitempty"`

	// ClientSecret is the app registration's client secret. Required.
	ClientSecret string `json:"client_secret,omitempty"`

	// AuthorityHost is the Entra ID authority. Default
	// https://login.microsoftonline.com; sovereign clouds use their own host
	// (e.g. https://login.microsoftonline.us, https://login.partner.microsoftonline.cn).
	AuthorityHost string `json:"authority_host,omitempty"`

	// TokenEndpoint is the full URL of the token endpoint. Optional; when set
	// it overrides authority_host and tenant_id for building the URL.
	TokenEndpoint string `json:"token_endpoint,omitempty"`

	// RefreshWindow is how much lifetime a token must have left to be
	// injected; a token with less is refreshed first. Default 60s.
	RefreshWindow caddy.Duration `json:"refresh_window,omitempty"`

	// Redis, when set, shares tokens between replicas through Redis and
	// coordinates their refreshes with a lock. Default: an in-process memory
	// cache per replica.
	Redis *RedisConfig `json:"redis,omitempty"`

	// Applications maps an application name, as used by entra_token, to what
	// its tokens are for. At least one is required.
	Applications map[string]*Application `json:"applications,omitempty"`

	cache  *tokencache.Cache
	logger *zap.Logger
}

// RedisConfig is the shared token store.
type RedisConfig struct {
	// URL is a redis:// or rediss:// URL
	// (redis://[user:password@]host:port[/db]). Required. Placeholders are
	// resolved at provision time.
	URL string `json:"url,omitempty"`

	// KeyPrefix is put before every key the sidecar writes. Default "entra:".
	KeyPrefix string `json:"key_prefix,omitempty"`
}

// Application is one application name and the scopes its tokens carry.
type Application struct {
	// Scopes are requested for the application's tokens, e.g.
	// https://graph.microsoft.com/.default. At least one is required.
	Scopes []string `json:"scopes,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "entra",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision resolves placeholders, builds the token client and the cache, and
// registers every application.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	resolved, err := a.resolve(caddy.NewReplacer())
	if err != nil {
		return err
	}
	cache, err := buildCache(resolved, a.logger)
	if err != nil {
		return err
	}
	a.cache = cache
	return nil
}

// Validate checks what Provision could not: the cache exists and every
// application is registered.
func (a *App) Validate() error {
	if a.cache == nil {
		return errors.New("entra app was not provisioned")
	}
	return nil
}

// Start implements caddy.App; the app has nothing to start.
func (a *App) Start() error { return nil }

// Stop implements caddy.App; resources are freed by Cleanup.
func (a *App) Stop() error { return nil }

// Cleanup closes the token store (the Redis client, if any).
func (a *App) Cleanup() error {
	if a.cache == nil {
		return nil
	}
	err := a.cache.Close()
	a.cache = nil
	return err
}

// Token returns a token record for the named application, from the cache or
// freshly requested. It is the Go counterpart of the seed library's
// getClientCredentialToken and what the entra_token handler calls.
func (a *App) Token(ctx context.Context, applicationName string) (tokencache.ClientCredential, error) {
	return a.cache.Token(ctx, applicationName)
}

// hasApplication reports whether name is configured.
func (a *App) hasApplication(name string) bool {
	_, ok := a.Applications[name]
	return ok
}

// applicationNames lists the configured names, sorted, for error messages.
func (a *App) applicationNames() string {
	names := make([]string, 0, len(a.Applications))
	for name := range a.Applications {
		names = append(names, name)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// configError is a configuration error with the seed's code, naming the field.
func configError(field, reason string) error {
	return fmt.Errorf("%s: %s: %s", tokencache.CodeProviderInvalidConfig, field, reason)
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.Validator    = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
