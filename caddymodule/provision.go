package caddymodule

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
	"unicode"

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
	// RedisTLS describes Redis.TLSConfig for the pool key (a tls.Config
	// does not marshal): CA file digest and server name.
	RedisTLS string
}

// provision builds the applications' clients and registers them with the
// pooled cache.
func (a *App) provision(repl *caddy.Replacer) error {
	settings, err := a.cacheSettings(repl)
	if err != nil {
		return err
	}
	var fingerprintKey []byte // with encryption at rest, fingerprints are keyed too
	if settings.Redis != nil && len(settings.Redis.EncryptionKeys) > 0 {
		fingerprintKey = settings.Redis.EncryptionKeys[0]
	}
	apps, err := a.buildApplications(repl, fingerprintKey)
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
	// Each config holds handles of its own, released in Cleanup: a new
	// config never takes what a running one uses away from it (even when
	// the new one then fails to load), while tokens, background refreshes
	// and refreshes in flight, kept per record key, carry over.
	a.handles = make(map[string]*tokencache.Handle, len(apps))
	for _, app := range apps {
		h, err := cache.Register(app)
		if err != nil {
			for _, registered := range a.handles {
				registered.Release()
			}
			a.handles = nil
			_, _ = cachePool.Delete(key)
			return fmt.Errorf("registering application %s: %v", app.Name, err)
		}
		a.handles[app.Name] = h
	}
	if loaded {
		a.logger.Debug("reusing the token cache of the previous config")
	}
	a.cache, a.poolKey = cache, key
	return nil
}

// credentialIDFunc fingerprints the credential a client uses at the moment,
// so that a permanent failure shared through Redis (a wrong secret) pauses
// only the replicas with that same credential, not those already rotated to
// a good one (a new secret, or a certificate renewed on disk). It is a
// SHA-256 of the client's own digest salted with its identity — an
// HMAC-SHA-256 under key when Redis records are encrypted, so that reading
// Redis does not allow testing guesses of a weak secret — truncated, and
// never logged.
func credentialIDFunc(client *entra.Client, key []byte) func() string {
	identity := client.Identity()
	return func() string {
		mac := hmac.New(sha256.New, key) // an empty key: a plain salted hash
		fmt.Fprintf(mac, "caddy-entra credential v1\n%s\n%s", identity, client.CredentialFingerprint())
		return hex.EncodeToString(mac.Sum(nil)[:12])
	}
}

// fileDigest is the SHA-256 of a file's content (empty if unreadable): a
// rotated certificate is another credential.
func fileDigest(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
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
	case s.RefreshWindow > MaxRefreshWindow:
		return nil, configError("refresh_window", fmt.Sprintf("must be at most %s: Entra ID tokens live 60 to 90 minutes, "+
			"and a token with less than refresh_window left is never used", MaxRefreshWindow))
	case s.RefreshAhead < 0 || s.RefreshAhead >= 1:
		return nil, configError("refresh_ahead", "must be a fraction of the lifetime, above 0 and below 1")
	case s.WaitTimeout < 0:
		return nil, configError("wait_timeout", "must not be negative")
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

// options resolves the redis block into store options, and describes its TLS
// settings (CA file digest, server name) for the pool key.
func (rc *RedisConfig) options(repl *caddy.Replacer) (*tokencache.RedisOptions, string, error) {
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
	var tlsDescription string
	if caFile := r.value("tls_ca", rc.TLSCA); caFile != "" || rc.TLSServerName != "" {
		tlsConfig, err := redisTLSConfig(caFile, r.value("tls_server_name", rc.TLSServerName))
		if err != nil {
			return nil, "", err
		}
		opts.TLSConfig = tlsConfig
		tlsDescription = fileDigest(caFile) + "\n" + tlsConfig.ServerName
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
			return nil, "", configError(fmt.Sprintf("redis encryption_key #%d", i+1), err.Error())
		}
		opts.EncryptionKeys = append(opts.EncryptionKeys, key)
	}
	if r.err != nil {
		return nil, "", r.err
	}
	switch {
	case opts.URL == "" && len(opts.Addrs) == 0:
		return nil, "", configError("redis", "a URL or addrs is required"+placeholderHint(rc.URL))
	case opts.URL != "" && len(opts.Addrs) > 0:
		return nil, "", configError("redis", "set either a URL or addrs, not both")
	case opts.OpTimeout < 0:
		return nil, "", configError("redis timeout", "must not be negative")
	}
	return opts, tlsDescription, nil
}

// redisTLSConfig verifies the Redis server against the CAs of caFile (the
// system roots when empty) and, when set, serverName.
func redisTLSConfig(caFile, serverName string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if caFile == "" {
		return cfg, nil
	}
	pemData, err := os.ReadFile(caFile)
	if err != nil {
		return nil, configError("redis tls_ca", fmt.Sprintf("reading the CA file: %v", err))
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemData) {
		return nil, configError("redis tls_ca", "the file holds no PEM certificate")
	}
	cfg.RootCAs = pool
	return cfg, nil
}

// poolKey identifies a cache by its settings; secrets are hashed in.
func (s *cacheSettings) poolKey() (string, error) {
	hashed := *s
	if s.Redis != nil {
		redis := *s.Redis
		redis.TLSConfig = nil // described by RedisTLS
		hashed.Redis = &redis
	}
	raw, err := json.Marshal(hashed)
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

// buildApplications makes the cache's applications from the resolved ones.
func (a *App) buildApplications(repl *caddy.Replacer, fingerprintKey []byte) ([]tokencache.Application, error) {
	resolved, err := a.resolveApplications(repl)
	if err != nil {
		return nil, err
	}
	apps := make([]tokencache.Application, 0, len(resolved))
	for _, ra := range resolved {
		name, client, scopes := ra.Name, ra.Client, ra.Scopes
		tokenIdentity := tokenIdentityFor(client)
		a.remember(name, client)
		apps = append(apps, tokencache.Application{
			Name:             name,
			CredentialIDFunc: credentialIDFunc(client, fingerprintKey),
			Identity:         client.Identity(),
			Scopes:           scopes,
			Fetch:            learningFetch(fetchFunc(client, scopes), tokenIdentity),
			OnFetch:          fetchObserver(name, client.TokenEndpoint(), a.logger),
			VerifyStored:     verifyStoredFunc(tokenIdentity, scopes),
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
	if name == "" || strings.ContainsFunc(name, unicode.IsSpace) || strings.ContainsAny(name, "{}") {
		return nil, configError("application", fmt.Sprintf("invalid application name %q", name))
	}
	field := "application " + name + ": scope"
	if app == nil || len(app.Scopes) == 0 {
		return nil, configError(field, "at least one scope is required")
	}
	for _, scope := range app.Scopes {
		if scope == "" || strings.ContainsFunc(scope, unicode.IsSpace) {
			return nil, configError(field, fmt.Sprintf("invalid scope %q: must be non-empty and contain no whitespace", scope))
		}
	}
	return slices.Clone(app.Scopes), nil
}
