package tokencache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults of RedisOptions.
const (
	DefaultKeyPrefix      = "entra:"
	DefaultRedisOpTimeout = 250 * time.Millisecond
)

// RedisOptions configures a RedisStore.
type RedisOptions struct {
	// URL is redis://[user:pass@]host:port/db, or rediss:// for TLS, with
	// the query options go-redis's ParseURL knows (dial_timeout, pool_size...).
	URL string
	// KeyPrefix is the prefix of every key the caller derives with RecordKey.
	// Default "entra:". The store itself uses keys as given; it keeps the
	// prefix so that callers can read it back with RedisStore.KeyPrefix.
	KeyPrefix string
	// OpTimeout bounds each call to Redis, so that a slow Redis delays a
	// refresh by little before the cache carries on without it. Default 250ms.
	OpTimeout time.Duration
}

func (o RedisOptions) withDefaults() RedisOptions {
	if o.KeyPrefix == "" {
		o.KeyPrefix = DefaultKeyPrefix
	}
	if o.OpTimeout <= 0 {
		o.OpTimeout = DefaultRedisOpTimeout
	}
	return o
}

// RedisStore is a Store in Redis (standalone, Sentinel or Cluster through
// redis.UniversalClient). Records are JSON strings that expire with their
// token; locks are SET NX PX with a random owner, released by a
// compare-and-delete script.
type RedisStore struct {
	client    redis.UniversalClient
	keyPrefix string
	opTimeout time.Duration
}

// NewRedisStore parses opts.URL and makes a client. It does not connect:
// Redis being unreachable at start must not fail the sidecar; call Ping to
// find out. Errors never contain the URL's password.
func NewRedisStore(opts RedisOptions) (*RedisStore, error) {
	opts = opts.withDefaults()
	parsed, err := parseRedisURL(opts.URL)
	if err != nil {
		return nil, err
	}
	client := redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:           []string{parsed.Addr},
		ClientName:      parsed.ClientName,
		DB:              parsed.DB,
		Protocol:        parsed.Protocol,
		Username:        parsed.Username,
		Password:        parsed.Password,
		MaxRetries:      parsed.MaxRetries,
		MinRetryBackoff: parsed.MinRetryBackoff,
		MaxRetryBackoff: parsed.MaxRetryBackoff,
		DialTimeout:     parsed.DialTimeout,
		ReadTimeout:     parsed.ReadTimeout,
		WriteTimeout:    parsed.WriteTimeout,
		// Without this go-redis ignores context deadlines on reads and
		// writes, and OpTimeout would not bound a call to a hung Redis.
		ContextTimeoutEnabled: true,
		PoolFIFO:              parsed.PoolFIFO,
		PoolSize:              parsed.PoolSize,
		PoolTimeout:           parsed.PoolTimeout,
		MinIdleConns:          parsed.MinIdleConns,
		MaxIdleConns:          parsed.MaxIdleConns,
		MaxActiveConns:        parsed.MaxActiveConns,
		ConnMaxIdleTime:       parsed.ConnMaxIdleTime,
		ConnMaxLifetime:       parsed.ConnMaxLifetime,
		TLSConfig:             parsed.TLSConfig,
		DisableIdentity:       parsed.DisableIdentity,
		IdentitySuffix:        parsed.IdentitySuffix,
	})
	return NewRedisStoreFromClient(client, opts), nil
}

// parseRedisURL is redis.ParseURL with errors that cannot leak the password:
// url.Parse quotes the whole URL in its errors.
func parseRedisURL(rawURL string) (*redis.Options, error) {
	if rawURL == "" {
		return nil, errors.New("tokencache: parsing redis url: empty url")
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, fmt.Errorf("tokencache: parsing redis url: %s", redactPassword(err.Error(), rawURL))
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
	}
	return msg
}

// NewRedisStoreFromClient returns a store that uses client (which Close
// closes). OpTimeout is only enforced on reads and writes if the client has
// ContextTimeoutEnabled; NewRedisStore sets it.
func NewRedisStoreFromClient(client redis.UniversalClient, opts RedisOptions) *RedisStore {
	opts = opts.withDefaults()
	return &RedisStore{client: client, keyPrefix: opts.KeyPrefix, opTimeout: opts.OpTimeout}
}

// KeyPrefix returns the key prefix to give RecordKey.
func (s *RedisStore) KeyPrefix() string { return s.keyPrefix }

// Client returns the underlying client.
func (s *RedisStore) Client() redis.UniversalClient { return s.client }

// Ping checks that Redis answers within OpTimeout.
func (s *RedisStore) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	if err := s.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("tokencache: pinging redis: %w", err)
	}
	return nil
}

// Get reads and decodes the record under key. A record that does not decode
// is reported as an error wrapping ErrNotFound, so it counts as a miss and
// the next refresh overwrites it.
func (s *RedisStore) Get(ctx context.Context, key string) (*ClientCredential, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	raw, err := s.client.Get(ctx, key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("tokencache: reading record: %w", err)
	}
	var rec ClientCredential
	if err := json.Unmarshal(raw, &rec); err != nil {
		// Not %w: a json error can quote part of the value.
		return nil, fmt.Errorf("%w: decoding record %s: %s", ErrNotFound, key, jsonErrorKind(err))
	}
	return &rec, nil
}

// jsonErrorKind describes a decoding error without quoting the value.
func jsonErrorKind(err error) string {
	var syntaxErr *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntaxErr):
		return fmt.Sprintf("invalid JSON at offset %d", syntaxErr.Offset)
	case errors.As(err, &typeErr):
		return fmt.Sprintf("field %q is not a %s", typeErr.Field, typeErr.Type)
	default:
		return "invalid record"
	}
}

// Set writes rec as JSON under key, expiring after ttl.
func (s *RedisStore) Set(ctx context.Context, key string, rec *ClientCredential, ttl time.Duration) error {
	if ttl <= 0 {
		return errNonPositiveTTL
	}
	raw, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("tokencache: encoding record: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	if err := s.client.Set(ctx, key, raw, ttl).Err(); err != nil {
		return fmt.Errorf("tokencache: writing record: %w", err)
	}
	return nil
}

// TryLock is SET lockKey <owner> NX with a ttl, the owner being 16 random
// bytes, hex-encoded.
func (s *RedisStore) TryLock(ctx context.Context, lockKey string, ttl time.Duration) (string, bool, error) {
	if ttl <= 0 {
		return "", false, errNonPositiveTTL
	}
	owner := newOwner()
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	ok, err := s.client.SetNX(ctx, lockKey, owner, ttl).Result()
	if err != nil {
		return "", false, fmt.Errorf("tokencache: taking lock: %w", err)
	}
	if !ok {
		return "", false, nil
	}
	return owner, true, nil
}

// Unlock deletes lockKey if it still holds owner (see unlock.lua).
func (s *RedisStore) Unlock(ctx context.Context, lockKey, owner string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	n, err := unlockScript.Run(ctx, s.client, []string{lockKey}, owner).Int64()
	if err != nil {
		return false, fmt.Errorf("tokencache: releasing lock: %w", err)
	}
	return n == 1, nil
}

// Close closes the client.
func (s *RedisStore) Close() error { return s.client.Close() }

var _ Store = (*RedisStore)(nil)
