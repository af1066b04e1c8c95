package redisstore

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultOpTimeout is the default of Options.OpTimeout.
const DefaultOpTimeout = 100 * time.Millisecond

// Options configures a Store. Give either URL or Addrs, not both.
type Options struct {
	// URL is redis://[user:pass@]host:port/db, or rediss:// for TLS, with
	// go-redis's query options. Username, Password, DB, TLS, TLSConfig and
	// MaxConnectionAge override it when not zero: DB 0 is no DB, so it
	// does not override the URL's /db (leave that out, or give /0).
	URL string
	// Addrs are host:port addresses: one without MasterName is a standalone
	// server, with MasterName Sentinels, several without it Cluster seeds.
	Addrs []string
	// MasterName is the Sentinel master's name.
	MasterName string
	// Username and Password authenticate to Redis (ACL user or requirepass).
	Username string
	Password string
	// Credentials, when set, gives each new connection's user name and
	// password instead (Redis with Entra ID authentication). It is called
	// as go-redis dials, so it must not need Redis.
	Credentials func(ctx context.Context) (username, password string, err error) `json:"-"`
	// MaxConnectionAge, when set, retires connections that old and renews
	// the subscription as often, so that none outlives an expiring
	// password. Default 0: connections live on.
	MaxConnectionAge time.Duration
	// DB is the database number (0 for Cluster). Default 0.
	DB int
	// TLS turns on TLS with the system roots (TLS 1.2 or later).
	TLS bool
	// TLSConfig, if set, is the TLS configuration (implies TLS).
	TLSConfig *tls.Config
	// KeyPrefix is the prefix of the keys callers derive with
	// tokencache.RecordKey, and of the channels the store subscribes to.
	// Default "entra:".
	KeyPrefix string
	// OpTimeout bounds each attempt of a call, so that a hung Redis delays
	// a refresh by little (see Store.retryingTimeouts). Default 100ms.
	OpTimeout time.Duration
	// EncryptionKeys, if any, seal records with AES-256-GCM: 32 bytes each
	// (see ParseEncryptionKey); the first seals, all open. A record not
	// sealed with one is then a miss. Default none: plain JSON.
	EncryptionKeys [][]byte
}

// newClient makes the go-redis client opts describe. Errors never contain
// a password.
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
		cluster := len(o.Addrs) > 1 && o.MasterName == ""
		if cluster && o.DB != 0 {
			return nil, errors.New("tokencache: redis: cluster mode (several addrs) supports db 0 only")
		}
		var dialer func(context.Context, string, string) (net.Conn, error)
		if !cluster { // a Cluster's calls are never taken for a blackholed Redis's (see Store.noConnection)
			dialer = tlsDialer(tlsConfig)
		}
		return redis.NewUniversalClient(&redis.UniversalOptions{
			Addrs: o.Addrs, MasterName: o.MasterName, Username: o.Username, Password: o.Password,
			// Sentinels usually share the data nodes' password.
			SentinelUsername: o.Username, SentinelPassword: o.Password, DB: o.DB, TLSConfig: tlsConfig, Dialer: dialer,
			// Else go-redis ignores context deadlines: OpTimeout would not bound a call.
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
	parsed.Dialer = tlsDialer(parsed.TLSConfig)
	parsed.ContextTimeoutEnabled = true
	parsed.CredentialsProviderContext = o.Credentials
	parsed.ConnMaxLifetime = cmp.Or(o.MaxConnectionAge, parsed.ConnMaxLifetime)
	return redis.NewClient(parsed), nil
}

// tlsDialer returns, for cfg, the dialer go-redis would use (redis.NewDialer:
// tls.DialWithDialer, the handshake inside the dial) in two steps, so that
// the store's dial hook learns the TCP connection was made before the
// handshake (see connectedKey): nil without TLS, go-redis's own then.
// DialTimeout bounds both steps, as go-redis's: its pool gives each dial a
// context with that deadline.
func tlsDialer(cfg *tls.Config) func(context.Context, string, string) (net.Conn, error) {
	if cfg == nil {
		return nil
	}
	connect := redis.NewDialer(&redis.Options{}) // TCP with go-redis's keep-alives; ctx's deadline bounds it
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := connect(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if connected, ok := ctx.Value(connectedKey{}).(func()); ok {
			connected()
		}
		config := cfg
		if config.ServerName == "" { // as tls.DialWithDialer: the host dialled
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				host = addr
			}
			config = cfg.Clone()
			config.ServerName = host
		}
		tlsConn := tls.Client(conn, config)
		if err := tlsConn.HandshakeContext(ctx); err != nil {
			_ = conn.Close()
			return nil, err
		}
		return tlsConn, nil
	}
}

// parseRedisURL is redis.ParseURL with errors that cannot leak the
// password: url.Parse's quote the URL, and go-redis's quote its path or
// query, where a password holding a / or a ? ends up when unencoded. Each
// is mapped to its kind; no text of theirs is passed on.
func parseRedisURL(rawURL string) (*redis.Options, error) {
	if strings.Contains(rawURL, "#") { // url.Parse takes the rest for a fragment, go-redis ignores it
		return nil, errors.New("tokencache: parsing redis url: a # in the url (percent-encode it as %23 in a password)")
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("tokencache: parsing redis url: %s", urlErrorKind(err))
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return nil, errors.New("tokencache: parsing redis url: the scheme is not redis or rediss (want redis:// or rediss:// first; without it, a user name or password may be taken for the scheme)")
	}
	opts, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("tokencache: parsing redis url: %s", redisURLErrorKind(err))
	}
	if opts.TLSConfig != nil && opts.TLSConfig.InsecureSkipVerify {
		return nil, errors.New("tokencache: parsing redis url: skip_verify is refused (remove it from the URL): any server would be" +
			" taken for Redis and get its password (with entra, the identity's token) and the records; the server's certificate is" +
			" always verified, against tls_ca for a private CA")
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

// redisURLErrorKind describes a redis.ParseURL error of a URL url.Parse
// took, without quoting any of it. The query option it names comes from
// go-redis's list of options, never from the URL's text.
func redisURLErrorKind(err error) string {
	const encode = "; percent-encode / ? # and @ in the password"
	msg := strings.TrimPrefix(err.Error(), "redis: ")
	switch {
	case strings.HasPrefix(msg, "invalid URL path"):
		return "invalid path (want /<db>" + encode + ")"
	case strings.HasPrefix(msg, "invalid database number"):
		return "invalid database number (want /<db> or db=<db>, a number" + encode + ")"
	case strings.HasPrefix(msg, "unexpected option"):
		return "unknown query option (go-redis's ParseURL lists those it takes" + encode + ")"
	}
	// "invalid <option> number|duration|boolean: ..."
	if f := strings.Fields(msg); len(f) >= 3 && f[0] == "invalid" {
		if kind := strings.TrimSuffix(f[2], ":"); kind == "number" || kind == "duration" || kind == "boolean" {
			return fmt.Sprintf("query option %s: want a %s", f[1], kind)
		}
	}
	return "malformed url"
}
