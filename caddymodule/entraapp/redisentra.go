package entraapp

import (
	"cmp"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/binding"
	"github.com/caddy-entra/caddy-entra/entra"
)

// DefaultRedisMaxConnectionAge is max_connection_age's default; a token is
// renewed once it has twice this or less left (new connections get the
// current one meanwhile, while it is valid).
const DefaultRedisMaxConnectionAge = 10 * time.Minute

// resolveRedisEntra checks redis entra and gives the store its credentials.
func (a *App) resolveRedisEntra(repl *caddy.Replacer, cache *cacheSettings, apps []resolvedApplication) error {
	re, opts := a.Redis.Entra, cache.Redis
	if re.MaxConnectionAge < 0 {
		return ConfigError("redis entra max_connection_age", "must not be negative")
	}
	if re.MaxConnectionAge > 0 && time.Duration(re.MaxConnectionAge) < MinRedisMaxConnectionAge {
		return ConfigError("redis entra max_connection_age", fmt.Sprintf("must be at least %s (connections would be "+
			"dialled and authenticated anew faster than they are used)", MinRedisMaxConnectionAge))
	}
	u, _ := url.Parse(opts.URL)
	if opts.Username != "" || opts.Password != "" || u != nil && u.User != nil {
		return ConfigError("redis entra", "excludes username and password: the identity's object ID and token are the user name and password")
	}
	if !opts.TLS && opts.TLSConfig == nil && (u == nil || u.Scheme != "rediss") &&
		(opts.MasterName != "" || !loopbackRedis(opts.URL, opts.Addrs)) {
		return ConfigError("redis entra", "requires TLS (a rediss:// URL, or tls): the token is sent as the password"+
			" (only one standalone Redis on a loopback address may go without)")
	}
	var client *entra.Client
	if re.Application != "" {
		i := slices.IndexFunc(apps, func(app resolvedApplication) bool { return app.Name == re.Application })
		if i < 0 {
			return ConfigError("redis entra", "application "+re.Application+" is not configured")
		}
		client = apps[i].Client
	} else {
		cfg, err := a.IdentityConfig.clientConfig(repl, "redis entra: ")
		if err != nil {
			return err
		}
		cfg.Logger = a.credentialLogger(zap.String("identity", "redis entra"))
		if client, err = entra.NewClient(cfg); err != nil {
			return prefixConfigError("redis entra: ", err)
		}
	}
	age := cmp.Or(time.Duration(re.MaxConnectionAge), DefaultRedisMaxConnectionAge)
	opts.Credentials = binding.NewRedisCredentials(client, 2*age, a.logger).Credentials
	opts.MaxConnectionAge = age
	cache.RedisEntra = client.CacheKey() + "\n" + client.CredentialFingerprint() + "\n" + age.String()
	return nil
}

// loopbackRedis reports whether Redis is one server on this machine: a
// cluster's seeds or several addresses may point to nodes elsewhere, which
// would get the token too.
func loopbackRedis(rawURL string, addrs []string) bool {
	if rawURL != "" {
		u, err := url.Parse(rawURL)
		if err != nil {
			return false
		}
		addrs = []string{u.Host}
	}
	for _, addr := range addrs {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			host = addr
		}
		ip := net.ParseIP(strings.Trim(host, "[]"))
		if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return false
		}
	}
	return len(addrs) == 1
}
