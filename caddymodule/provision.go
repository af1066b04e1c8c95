package caddymodule

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/tokencache"
)

// resolvedConfig is the app's configuration with every placeholder replaced.
// It holds secrets: it is never logged and never stored in the JSON config.
type resolvedConfig struct {
	client        entra.Config
	refreshWindow time.Duration
	redisURL      string
	keyPrefix     string
	applications  map[string][]string
}

// resolve replaces the {env.*} and {file.*} placeholders of every field. An
// unknown placeholder is an error naming the field; the value is never shown.
func (a *App) resolve(repl *caddy.Replacer) (*resolvedConfig, error) {
	var firstErr error
	field := func(name, raw string) string {
		value, err := repl.ReplaceOrErr(raw, false, true)
		if err != nil && firstErr == nil {
			firstErr = configError(name, "unknown placeholder (only {env.*}, {file.*} and global placeholders are resolved)")
		}
		return strings.TrimSpace(value)
	}
	rc := &resolvedConfig{
		client: entra.Config{
			TenantID:      field("tenant_id", a.TenantID),
			ClientID:      field("client_id", a.ClientID),
			ClientSecret:  field("client_secret", a.ClientSecret),
			AuthorityHost: field("authority_host", a.AuthorityHost),
			TokenEndpoint: field("token_endpoint", a.TokenEndpoint),
		},
		refreshWindow: time.Duration(a.RefreshWindow),
		applications:  make(map[string][]string, len(a.Applications)),
	}
	if a.Redis != nil {
		rc.redisURL = field("redis.url", a.Redis.URL)
		rc.keyPrefix = a.Redis.KeyPrefix
		if rc.redisURL == "" {
			return nil, configError("redis.url", "is required when redis is set"+placeholderHint(a.Redis.URL))
		}
	}
	if firstErr != nil {
		return nil, firstErr
	}
	for _, check := range []struct{ name, raw, value string }{
		{"tenant_id", a.TenantID, rc.client.TenantID},
		{"client_id", a.ClientID, rc.client.ClientID},
		{"client_secret", a.ClientSecret, rc.client.ClientSecret},
	} {
		if check.value == "" && (check.name != "tenant_id" || rc.client.TokenEndpoint == "") {
			return nil, configError(check.name, "is required"+placeholderHint(check.raw))
		}
	}
	if rc.refreshWindow < 0 {
		return nil, configError("refresh_window", "must not be negative")
	}
	if rc.refreshWindow == 0 {
		rc.refreshWindow = DefaultRefreshWindow
	}
	if len(a.Applications) == 0 {
		return nil, configError("application", "at least one application is required")
	}
	for name, app := range a.Applications {
		scopes, err := validateApplication(name, app)
		if err != nil {
			return nil, err
		}
		rc.applications[name] = scopes
	}
	return rc, nil
}

// placeholderHint explains an empty value that came from a placeholder, naming
// the placeholder (never its value).
func placeholderHint(raw string) string {
	if strings.Contains(raw, "{") {
		return fmt.Sprintf(" (%s resolved to an empty value)", raw)
	}
	return ""
}

// validateApplication checks an application's name and scopes.
func validateApplication(name string, app *Application) ([]string, error) {
	if name == "" || strings.ContainsAny(name, " \t\r\n{}") {
		return nil, configError("application", fmt.Sprintf("invalid application name %q", name))
	}
	field := "application " + name + ": scope"
	if app == nil || len(app.Scopes) == 0 {
		return nil, configError(field, "at least one scope is required")
	}
	scopes := make([]string, 0, len(app.Scopes))
	for _, scope := range app.Scopes {
		if scope == "" || strings.ContainsAny(scope, " \t\r\n") {
			return nil, configError(field, fmt.Sprintf("invalid scope %q: must be non-empty and contain no whitespace", scope))
		}
		scopes = append(scopes, scope)
	}
	return scopes, nil
}

// buildCache makes the token client, the store and the cache, and registers
// every application. On error nothing is left open.
func buildCache(rc *resolvedConfig, logger *zap.Logger) (*tokencache.Cache, error) {
	client, err := entra.NewClient(rc.client)
	if err != nil {
		var ce *entra.ConfigError
		if errors.As(err, &ce) {
			return nil, configError(ce.Field, ce.Reason)
		}
		return nil, fmt.Errorf("%s: %v", tokencache.CodeProviderInvalidConfig, err)
	}
	store, err := buildStore(rc, logger)
	if err != nil {
		return nil, err
	}
	cache, err := tokencache.New(tokencache.Options{
		Store:         store,
		RefreshWindow: rc.refreshWindow,
		Logger:        logger,
	})
	if err != nil {
		_ = store.Close()
		return nil, fmt.Errorf("creating token cache: %v", err)
	}
	identity := strings.Join([]string{client.TokenEndpoint(), client.TenantID(), client.ClientID()}, "\n")
	names := make([]string, 0, len(rc.applications))
	for name := range rc.applications {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		scopes := rc.applications[name]
		err := cache.Register(tokencache.Application{
			Name:     name,
			Identity: identity,
			Scopes:   scopes,
			Fetch:    fetchFunc(client, name, scopes, logger),
		})
		if err != nil {
			_ = cache.Close()
			return nil, fmt.Errorf("registering application %s: %v", name, err)
		}
	}
	return cache, nil
}

// buildStore returns the Redis store when redis is configured, else the
// in-process memory store. An unreachable Redis is not an error: the cache
// degrades to per-replica caching until it is back.
func buildStore(rc *resolvedConfig, logger *zap.Logger) (tokencache.Store, error) {
	if rc.redisURL == "" {
		return tokencache.NewMemoryStore(), nil
	}
	store, err := tokencache.NewRedisStore(tokencache.RedisOptions{
		URL:       rc.redisURL,
		KeyPrefix: rc.keyPrefix,
	})
	if err != nil {
		return nil, configError("redis.url", err.Error())
	}
	logger.Info("sharing tokens through redis", zap.String("key_prefix", store.KeyPrefix()))
	return store, nil
}
