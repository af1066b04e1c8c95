package entraapp

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/binding"
	"github.com/caddy-entra/caddy-entra/tokencache"
	"github.com/caddy-entra/caddy-entra/tokencache/redisstore"
)

// cachePool keeps token caches across reloads, keyed by their settings.
var cachePool = caddy.NewUsagePool()

type pooledCache struct{ *tokencache.Cache }

func (p pooledCache) Destruct() error { return p.Close() }

// register takes (or makes) the pooled cache of s and registers s's
// applications with it.
func (a *App) register(s *settings) error {
	var fingerprintKey []byte // with encryption at rest, fingerprints are keyed too
	if s.cache.Redis != nil && len(s.cache.Redis.EncryptionKeys) > 0 {
		fingerprintKey = s.cache.Redis.EncryptionKeys[0]
	}
	apps := a.cacheApplications(s.applications, fingerprintKey)
	settings := s.cache
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
	// Each config holds its own handles: a new config never takes what a
	// running one uses, while tokens and refreshes, per record key, carry
	// over. A rekey, which a registration may start, waits for the handles.
	a.lifecycle = new(lifecycleGuard)
	a.lifecycle.mu.Lock()
	defer a.lifecycle.mu.Unlock()
	handles := make(map[string]*atomic.Pointer[tokencache.Handle], len(apps))
	fail := func(err error) error {
		for _, registered := range handles {
			registered.Load().Release()
		}
		_, _ = cachePool.Delete(key)
		return err
	}
	for _, app := range apps {
		h, err := cache.RegisterPending(app) // activated in Start
		if err != nil {
			return fail(fmt.Errorf("registering application %s: %v", app.Name, err))
		}
		handles[app.Name] = new(atomic.Pointer[tokencache.Handle])
		handles[app.Name].Store(h)
	}
	exchangers, err := a.makeExchangers(cache, key, s)
	if err != nil {
		return fail(err)
	}
	a.exchangers = exchangers
	if loaded {
		a.logger.Debug("reusing the token cache of the previous config")
	}
	a.cache, a.poolKey, a.handles, a.resolved = cache, key, handles, s.applications
	return nil
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

// newCache makes the store and the cache; an unreachable Redis is not an
// error (each replica caches alone until it is back).
func newCache(s *cacheSettings, logger *zap.Logger) (*tokencache.Cache, error) {
	var store tokencache.Store = tokencache.NewMemoryStore()
	if s.Redis != nil {
		redisStore, err := redisstore.New(*s.Redis)
		if err != nil {
			return nil, ConfigError("redis", strings.TrimPrefix(err.Error(), "tokencache: "))
		}
		logger.Info("sharing tokens through redis", zap.Strings("addrs", redisAddrs(s.Redis)),
			zap.String("key_prefix", redisStore.KeyPrefix()), zap.Bool("encrypted", len(s.Redis.EncryptionKeys) > 0))
		store = redisStore
	}
	cache, err := tokencache.New(tokencache.Options{
		Store:            store,
		RefreshWindow:    s.RefreshWindow,
		RefreshAhead:     s.RefreshAhead,
		WaitTimeout:      s.WaitTimeout,
		FetchConcurrency: s.FetchConcurrency,
		Logger:           logger,
	})
	if err != nil {
		_ = store.Close()
		return nil, fmt.Errorf("creating token cache: %v", err)
	}
	return cache, nil
}

// cacheApplications makes the cache's applications, every one but the
// on-behalf-of ones (their tokens are their exchangers'); a system-assigned
// identity not learned yet is registered again once its token names it.
func (a *App) cacheApplications(resolved []resolvedApplication, fingerprintKey []byte) []tokencache.Application {
	apps := make([]tokencache.Application, 0, len(resolved))
	for _, ra := range resolved {
		name, client := ra.Name, ra.Client
		if ra.OnBehalfOf != nil {
			continue
		}
		var app tokencache.Application
		var learned func(error)
		if _, unlearned := binding.CacheKey(client); unlearned {
			learned = binding.NewRekeyer(name, client, a.logger, func() { a.rekey(app, client) }).Learned
		}
		app = binding.Application(name, client, ra.Scopes, fingerprintKey, learned, a.logger)
		app.OnFetch = fetchObserver(name, client.TokenEndpoint(), a.logger)
		app.OnStoreDrop = storeDropObserver(name)
		apps = append(apps, app)
	}
	return apps
}

// redisAddrs names the Redis servers opts reaches (the URL's host, or the
// addresses), never a user name or password.
func redisAddrs(opts *redisstore.Options) []string {
	if opts.URL == "" {
		return opts.Addrs
	}
	if u, err := url.Parse(opts.URL); err == nil {
		return []string{u.Host}
	}
	return nil
}
