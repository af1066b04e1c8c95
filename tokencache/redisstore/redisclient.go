package redisstore

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-entra/caddy-entra/tokencache"
)

// DefaultOpTimeout is the default of Options.OpTimeout.
const DefaultOpTimeout = 100 * time.Millisecond

// Options configures a Store. Give either URL (one standalone
// server) or Addrs (standalone, Sentinel or Cluster), not both.
type Options struct {
	// URL is redis://[user:pass@]host:port/db, or rediss:// for TLS, with
	// the query options go-redis's ParseURL knows (dial_timeout, pool_size...).
	// Username and Password, when set, override the URL's; TLS or TLSConfig,
	// when set, turn TLS on or replace its config; DB, when not 0, overrides
	// the URL's path.
	URL string
	// Addrs are host:port addresses for redis.NewUniversalClient: one
	// address and no MasterName is a standalone server; MasterName makes
	// them Sentinel addresses; several addresses without MasterName are
	// Cluster seed nodes.
	Addrs []string
	// MasterName is the Sentinel master's name (Sentinel mode).
	MasterName string
	// Username and Password authenticate to Redis (ACL user or requirepass).
	Username string
	Password string
	// Credentials, when set, gives the user name and password of each new
	// connection instead (e.g. Redis with Entra ID authentication: the
	// identity's object ID and a token). go-redis calls it as it dials, so
	// it must not need Redis.
	Credentials func(ctx context.Context) (username, password string, err error) `json:"-"`
	// MaxConnectionAge, when set, retires each connection that old when it
	// is next taken from the pool, and renews the shared subscription as
	// often, so that no connection outlives a password that expires (set
	// it below the least time Credentials' passwords have left). Default 0:
	// connections live on.
	MaxConnectionAge time.Duration
	// DB is the database number (standalone and Sentinel; must be 0 for
	// Cluster). Default 0.
	DB int
	// TLS turns on TLS with the system roots (TLS 1.2 or later).
	TLS bool
	// TLSConfig, if set, is the TLS configuration (implies TLS).
	TLSConfig *tls.Config
	// KeyPrefix is the prefix of every key the caller derives with tokencache.RecordKey.
	// Default "entra:". The store itself uses keys as given; it keeps the
	// prefix so that callers can read it back with Store.KeyPrefix, and
	// subscribes to the update channels under it.
	KeyPrefix string
	// OpTimeout bounds each attempt of a call to Redis, so that a hung
	// Redis delays a refresh by little (3 attempts) before the cache
	// carries on without it; an attempt that times out while Redis answers
	// the store's other calls is sent again with more time (see
	// Store.retryingTimeouts). Default 100ms.
	OpTimeout time.Duration
	// EncryptionKeys, if any, seal records at rest with AES-256-GCM: each
	// is 32 bytes (see ParseEncryptionKey); the first seals, all open (for
	// key rotation). With keys, a record that is not sealed, or sealed with
	// a key not listed, is a miss and gets overwritten. Default: none,
	// records are plain JSON.
	EncryptionKeys [][]byte
}

func (o Options) withDefaults() Options {
	o.KeyPrefix = cmp.Or(o.KeyPrefix, tokencache.DefaultKeyPrefix)
	if o.OpTimeout <= 0 {
		o.OpTimeout = DefaultOpTimeout
	}
	return o
}

// newClient makes the go-redis client opts describe. Errors never contain a
// password.
func (o Options) newClient() (redis.UniversalClient, error) {
	tlsConfig := o.TLSConfig
	if tlsConfig == nil && o.TLS {
		tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	switch {
	case o.URL != "" && len(o.Addrs) > 0:
		return nil, errors.New("tokencache: redis: url and addrs are both set; give one")
	case o.URL == "" && len(o.Addrs) == 0:
		return nil, errors.New("tokencache: redis: neither url nor addrs is set")
	case o.URL != "" && o.MasterName != "":
		return nil, errors.New("tokencache: redis: master_name needs addrs (sentinel addresses), not a url")
	case o.DB < 0:
		return nil, errors.New("tokencache: redis: db must not be negative")
	}
	if len(o.Addrs) > 0 {
		for i, addr := range o.Addrs {
			if strings.TrimSpace(addr) == "" {
				return nil, fmt.Errorf("tokencache: redis: addrs[%d] is empty", i)
			}
		}
		if len(o.Addrs) > 1 && o.MasterName == "" && o.DB != 0 {
			return nil, errors.New("tokencache: redis: cluster mode (several addrs) supports db 0 only")
		}
		return redis.NewUniversalClient(&redis.UniversalOptions{
			Addrs:      o.Addrs,
			MasterName: o.MasterName,
			Username:   o.Username,
			Password:   o.Password,
			// Sentinels usually share the data nodes' password.
			SentinelUsername: o.Username,
			SentinelPassword: o.Password,
			DB:               o.DB,
			TLSConfig:        tlsConfig,
			// Without this go-redis ignores context deadlines on reads and
			// writes, and OpTimeout would not bound a call to a hung Redis.
			ContextTimeoutEnabled:      true,
			CredentialsProviderContext: o.Credentials,
			ConnMaxLifetime:            o.MaxConnectionAge,
		}), nil
	}
	parsed, err := parseRedisURL(o.URL)
	if err != nil {
		return nil, err
	}
	parsed.Username, parsed.Password = cmp.Or(o.Username, parsed.Username), cmp.Or(o.Password, parsed.Password)
	parsed.DB, parsed.TLSConfig = cmp.Or(o.DB, parsed.DB), cmp.Or(tlsConfig, parsed.TLSConfig)
	parsed.ContextTimeoutEnabled = true
	parsed.CredentialsProviderContext = o.Credentials
	parsed.ConnMaxLifetime = cmp.Or(o.MaxConnectionAge, parsed.ConnMaxLifetime)
	return redis.NewClient(parsed), nil
}

// parseRedisURL is redis.ParseURL with errors that cannot leak the password:
// url.Parse quotes the whole URL, or the offending part of it, in its
// errors, so a URL that does not parse is reported only by what kind of
// part is malformed.
func parseRedisURL(rawURL string) (*redis.Options, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("tokencache: parsing redis url: %s", urlErrorKind(err))
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return nil, fmt.Errorf("tokencache: parsing redis url: scheme %q is not redis or rediss", u.Scheme)
	}
	opts, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("tokencache: parsing redis url: %s", redactPassword(err.Error(), rawURL))
	}
	return opts, nil
}

// urlErrorKind describes a url.Parse error without quoting any of the URL.
func urlErrorKind(err error) string {
	var escErr url.EscapeError
	var hostErr url.InvalidHostError
	switch {
	case errors.As(err, &escErr):
		return "malformed percent-escape (a % must be followed by two hex digits: percent-encode special characters in the password)"
	case errors.As(err, &hostErr):
		return "invalid character in the host"
	case strings.Contains(err.Error(), "invalid port"):
		return "invalid port"
	case strings.Contains(err.Error(), "control character"):
		return "control character in the url"
	case strings.Contains(err.Error(), "missing protocol scheme"):
		return "missing scheme (redis:// or rediss://)"
	default:
		return "malformed url"
	}
}

// redactPassword removes the URL's password from msg, in case an error
// quotes it.
func redactPassword(msg, rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil || u.User == nil {
		// Unparsable: redact whatever sits between "//user:" and "@".
		if at := strings.LastIndex(rawURL, "@"); at >= 0 {
			userinfo := rawURL[:at]
			if i := strings.Index(userinfo, "//"); i >= 0 {
				userinfo = userinfo[i+2:]
			}
			if c := strings.Index(userinfo, ":"); c >= 0 && c+1 < len(userinfo) {
				msg = strings.ReplaceAll(msg, userinfo[c+1:], "xxxxx")
			}
		}
		return msg
	}
	if pass, ok := u.User.Password(); ok && pass != "" {
		msg = strings.ReplaceAll(msg, pass, "xxxxx")
		msg = strings.ReplaceAll(msg, url.QueryEscape(pass), "xxxxx")
		msg = strings.ReplaceAll(msg, url.PathEscape(pass), "xxxxx")
	}
	return msg
}
