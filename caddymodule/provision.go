package caddymodule

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/tokencache"
)

// cachePool keeps token caches across config reloads, keyed by their store
// and refresh settings: a reload that keeps them gets the same cache back,
// with its tokens, its Redis client and any refresh in flight.
var cachePool = caddy.NewUsagePool()

// pooledCache lets the pool close a cache when no config uses it any more.
type pooledCache struct{ *tokencache.Cache }

// Destruct closes the cache and its store.
func (p pooledCache) Destruct() error { return p.Close() }

// cacheSettings is what a cache is made of, resolved. It holds secrets (the
// Redis password, encryption keys): it is hashed for the pool key, never
// logged.
type cacheSettings struct {
	RefreshWindow time.Duration
	RefreshAhead  float64
	WaitTimeout   time.Duration
	Redis         *tokencache.RedisOptions
}

// provision builds the applications' clients and registers them with the
// pooled cache.
func (a *App) provision(repl *caddy.Replacer) error {
	settings, err := a.cacheSettings(repl)
	if err != nil {
		return err
	}
	apps, err := a.buildApplications(repl)
	if err != nil {
		return err
	}
	key, err := settings.poolKey()
	if err != nil {
		return err
	}
	value, loaded, err := cachePool.LoadOrNew(key, func() (caddy.Destructor, error) {
		cache, err := newCache(settings, a.logger)
		if err != nil {
			return nil, err
		}
		return pooledCache{cache}, nil
	})
	if err != nil {
		return err
	}
	cache := value.(pooledCache).Cache
	for _, app := range apps {
		if err := cache.Upsert(app); err != nil {
			_, _ = cachePool.Delete(key)
			return fmt.Errorf("registering application %s: %v", app.Name, err)
		}
	}
	if loaded {
		a.logger.Debug("reusing the token cache of the previous config")
	}
	a.cache, a.poolKey = cache, key
	return nil
}

// cacheSettings validates and resolves the store and refresh settings.
func (a *App) cacheSettings(repl *caddy.Replacer) (*cacheSettings, error) {
	s := &cacheSettings{
		RefreshWindow: time.Duration(a.RefreshWindow),
		RefreshAhead:  a.RefreshAhead,
		WaitTimeout:   time.Duration(a.WaitTimeout),
	}
	switch {
	case s.RefreshWindow < 0:
		return nil, configError("refresh_window", "must not be negative")
	case s.RefreshAhead < 0 || s.RefreshAhead >= 1:
		return nil, configError("refresh_ahead", "must be a fraction of the lifetime, above 0 and below 1")
	case s.WaitTimeout < 0:
		return nil, configError("wait_timeout", "must not be negative")
	}
	if s.RefreshWindow == 0 {
		s.RefreshWindow = DefaultRefreshWindow
	}
	if a.Redis != nil {
		opts, err := a.Redis.options(repl)
		if err != nil {
			return nil, err
		}
		s.Redis = opts
	}
	return s, nil
}

// options resolves the redis block into store options.
func (rc *RedisConfig) options(repl *caddy.Replacer) (*tokencache.RedisOptions, error) {
	r := resolver{repl: repl, prefix: "redis "}
	opts := &tokencache.RedisOptions{
		URL:        r.value("url", rc.URL),
		MasterName: r.value("master_name", rc.MasterName),
		Username:   r.value("username", rc.Username),
		Password:   r.required("password", rc.Password),
		DB:         rc.DB,
		TLS:        rc.TLS,
		KeyPrefix:  rc.KeyPrefix,
		OpTimeout:  time.Duration(rc.Timeout),
	}
	for _, addr := range rc.Addrs {
		if addr = r.value("addrs", addr); addr != "" {
			opts.Addrs = append(opts.Addrs, addr)
		}
	}
	for i, raw := range rc.EncryptionKeys {
		encoded := r.required(fmt.Sprintf("encryption_key #%d", i+1), raw)
		if r.err != nil {
			break
		}
		key, err := tokencache.ParseEncryptionKey(encoded)
		if err != nil {
			return nil, configError(fmt.Sprintf("redis encryption_key #%d", i+1), err.Error())
		}
		opts.EncryptionKeys = append(opts.EncryptionKeys, key)
	}
	if r.err != nil {
		return nil, r.err
	}
	switch {
	case opts.URL == "" && len(opts.Addrs) == 0:
		return nil, configError("redis", "a URL or addrs is required"+placeholderHint(rc.URL))
	case opts.URL != "" && len(opts.Addrs) > 0:
		return nil, configError("redis", "set either a URL or addrs, not both")
	case opts.OpTimeout < 0:
		return nil, configError("redis timeout", "must not be negative")
	}
	return opts, nil
}

// poolKey identifies a cache by its settings; secrets are hashed in.
func (s *cacheSettings) poolKey() (string, error) {
	raw, err := json.Marshal(s)
	if err != nil {
		return "", fmt.Errorf("hashing cache settings: %v", err)
	}
	sum := sha256.Sum256(raw)
	return "entra-cache-" + hex.EncodeToString(sum[:]), nil
}

// newCache makes the store and the cache. An unreachable Redis is not an
// error: the cache degrades to per-replica caching until it is back.
func newCache(s *cacheSettings, logger *zap.Logger) (*tokencache.Cache, error) {
	var store tokencache.Store = tokencache.NewMemoryStore()
	if s.Redis != nil {
		redisStore, err := tokencache.NewRedisStore(*s.Redis)
		if err != nil {
			return nil, configError("redis", strings.TrimPrefix(err.Error(), "tokencache: "))
		}
		logger.Info("sharing tokens through redis",
			zap.String("key_prefix", redisStore.KeyPrefix()),
			zap.Bool("encrypted", len(s.Redis.EncryptionKeys) > 0))
		store = redisStore
	}
	cache, err := tokencache.New(tokencache.Options{
		Store:         store,
		RefreshWindow: s.RefreshWindow,
		RefreshAhead:  s.RefreshAhead,
		WaitTimeout:   s.WaitTimeout,
		Logger:        logger,
	})
	if err != nil {
		_ = store.Close()
		return nil, fmt.Errorf("creating token cache: %v", err)
	}
	return cache, nil
}

// buildApplications validates every application and makes its token client.
func (a *App) buildApplications(repl *caddy.Replacer) ([]tokencache.Application, error) {
	if len(a.Applications) == 0 {
		return nil, configError("application", "at least one application is required")
	}
	names := make([]string, 0, len(a.Applications))
	for name := range a.Applications {
		names = append(names, name)
	}
	slices.Sort(names)
	apps := make([]tokencache.Application, 0, len(names))
	for _, name := range names {
		app := a.Applications[name]
		scopes, err := validateApplication(name, app)
		if err != nil {
			return nil, err
		}
		identity := a.IdentityConfig
		field := ""
		if !app.IdentityConfig.isZero() {
			identity = app.IdentityConfig.inherit(a.IdentityConfig)
			field = "application " + name + ": "
		}
		cfg, err := identity.clientConfig(repl, field)
		if err != nil {
			return nil, err
		}
		client, err := entra.NewClient(cfg)
		if err != nil {
			var ce *entra.ConfigError
			if errors.As(err, &ce) {
				return nil, configError(field+ce.Field, ce.Reason)
			}
			return nil, fmt.Errorf("%s: %s%v", tokencache.CodeProviderInvalidConfig, field, err)
		}
		apps = append(apps, tokencache.Application{
			Name:     name,
			Identity: client.Identity(),
			Scopes:   scopes,
			Fetch:    fetchFunc(client, name, scopes, a.logger),
		})
	}
	return apps, nil
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
	for _, scope := range app.Scopes {
		if scope == "" || strings.ContainsAny(scope, " \t\r\n") {
			return nil, configError(field, fmt.Sprintf("invalid scope %q: must be non-empty and contain no whitespace", scope))
		}
	}
	return slices.Clone(app.Scopes), nil
}
