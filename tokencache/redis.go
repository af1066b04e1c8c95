package tokencache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisStore is a Store in Redis (standalone, Sentinel or Cluster through
// redis.UniversalClient). Records are JSON strings (or sealed, see
// RedisOptions.EncryptionKeys) that expire with their token; locks are SET
// NX PX with a random owner, extended and released by compare-and-PEXPIRE
// and compare-and-delete scripts; backoffs are JSON that expire when they
// end. Announcements use classic PUBLISH, received by one shared pattern
// subscription per store.
type RedisStore struct {
	client    redis.UniversalClient
	keyPrefix string
	opTimeout time.Duration
	sealer    *sealer

	updates notifier
	// publisherID, random, is the message of this store's announcements.
	publisherID string
	// subMu guards the shared subscription, started by the first Subscribe:
	// subReady is closed once Redis confirmed it, subCancel ends it and
	// subDone is closed when its goroutine has.
	subMu        sync.Mutex
	subReady     chan struct{}
	subCancel    context.CancelFunc
	subDone      chan struct{}
	closed       bool
	subscribeErr func(error) // tests: called when an attempt to subscribe fails
}

// NewRedisStore makes a client from opts (see RedisOptions). It does not
// connect: Redis being unreachable at start must not fail the sidecar; call
// Ping to find out. Errors never contain a password or an encryption key.
func NewRedisStore(opts RedisOptions) (*RedisStore, error) {
	uopts, err := opts.universalOptions()
	if err != nil {
		return nil, err
	}
	return newRedisStore(redis.NewUniversalClient(uopts), opts)
}

// newRedisStore returns a store on client (which Close closes, also when
// opts are refused) with opts' key prefix, timeout and encryption keys.
// OpTimeout is only enforced on reads and writes if the client has
// ContextTimeoutEnabled, as NewRedisStore's has.
func newRedisStore(client redis.UniversalClient, opts RedisOptions) (*RedisStore, error) {
	opts = opts.withDefaults()
	if strings.ContainsAny(opts.KeyPrefix, "{}") {
		// RecordKey puts the hash tag after the prefix: a brace in the
		// prefix would make Redis Cluster hash a different part of the key,
		// splitting a record from its lock, backoff and channel.
		_ = client.Close()
		return nil, errors.New(`tokencache: redis: key_prefix must not contain "{" or "}" (they would break the Redis Cluster hash tag of the keys)`)
	}
	sealer, err := newSealer(opts.EncryptionKeys)
	if err != nil {
		_ = client.Close()
		return nil, err
	}
	return &RedisStore{client: client, keyPrefix: opts.KeyPrefix, opTimeout: opts.OpTimeout, sealer: sealer,
		publisherID: newOwner()}, nil
}

// KeyPrefix returns the key prefix to give RecordKey.
func (s *RedisStore) KeyPrefix() string { return s.keyPrefix }

// Client returns the underlying client.
func (s *RedisStore) Client() redis.UniversalClient { return s.client }

// Encrypted reports whether records are sealed.
func (s *RedisStore) Encrypted() bool { return s.sealer != nil }

// Authenticates reports whether records are authenticated: with
// encryption keys a record that was not sealed with one of them does not
// open (AES-GCM), so only holders of a key can write one.
func (s *RedisStore) Authenticates() bool { return s.Encrypted() }

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
// (or, with encryption, does not open) is reported as an error wrapping
// ErrNotFound, so it counts as a miss and the next refresh overwrites it;
// so is one longer than MaxRecordBytes, which is not even read.
func (s *RedisStore) Get(ctx context.Context, key string) (*Record, error) {
	rec, _, err := s.get(ctx, key)
	return rec, err
}

// get returns the record under key and its raw stored value.
func (s *RedisStore) get(ctx context.Context, key string) (*Record, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	raw, err := s.getBounded(ctx, key, MaxRecordBytes, "record")
	if errors.Is(err, redis.Nil) {
		return nil, nil, ErrNotFound
	}
	if errors.Is(err, errTooLarge) {
		return nil, nil, err
	}
	if err != nil {
		return nil, nil, fmt.Errorf("tokencache: reading record: %w", err)
	}
	plain, err := s.unseal(key, raw)
	if err != nil {
		return nil, raw, fmt.Errorf("%w: decoding record %s: %v", ErrNotFound, key, err)
	}
	var rec Record
	if err := json.Unmarshal(plain, &rec); err != nil {
		// Not %w: a json error can quote part of the value.
		return nil, raw, fmt.Errorf("%w: decoding record %s: %s", ErrNotFound, key, jsonErrorKind(err))
	}
	return &rec, raw, nil
}

// unseal returns the record's JSON from its stored value.
func (s *RedisStore) unseal(key string, raw []byte) ([]byte, error) {
	switch {
	case s.sealer != nil && isSealed(raw):
		return s.sealer.open(key, raw)
	case s.sealer != nil:
		return nil, errNotSealed
	case isSealed(raw):
		return nil, errSealedNoKeys
	default:
		return raw, nil
	}
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

// Set writes rec as JSON (sealed if the store has keys) under key,
// expiring after ttl. A record longer than MaxRecordBytes, which other
// replicas would not read, is not written: the error wraps errTooLarge.
func (s *RedisStore) Set(ctx context.Context, key string, rec *Record, ttl time.Duration) error {
	if ttl <= 0 {
		return errNonPositiveTTL
	}
	raw, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("tokencache: encoding record: %w", err)
	}
	if s.sealer != nil {
		raw = s.sealer.seal(key, raw)
	}
	if len(raw) > MaxRecordBytes {
		// Other replicas would not read it.
		return fmt.Errorf("tokencache: not writing record %s: %d bytes, over the %d-byte limit (%w)", key, len(raw), MaxRecordBytes, errTooLarge)
	}
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	if err := s.client.Set(ctx, key, raw, ttl).Err(); err != nil {
		return fmt.Errorf("tokencache: writing record: %w", err)
	}
	return nil
}

// DeleteRecord reads the record under key and, if it holds accessToken,
// deletes it unless its stored value changed in between (the unlock
// script's compare-and-delete on the raw value, which works on sealed
// records too).
func (s *RedisStore) DeleteRecord(ctx context.Context, key, accessToken string) (bool, error) {
	rec, raw, err := s.get(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if rec.AccessToken != accessToken {
		return false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	n, err := unlockScript.Run(ctx, s.client, []string{key}, raw).Int64()
	if err != nil {
		return false, fmt.Errorf("tokencache: deleting record: %w", err)
	}
	return n == 1, nil
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

// ExtendLock resets lockKey's ttl if it still holds owner (see extend.lua).
func (s *RedisStore) ExtendLock(ctx context.Context, lockKey, owner string, ttl time.Duration) (bool, error) {
	if ttl <= 0 {
		return false, errNonPositiveTTL
	}
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	n, err := extendScript.Run(ctx, s.client, []string{lockKey}, owner, ttl.Milliseconds()).Int64()
	if err != nil {
		return false, fmt.Errorf("tokencache: extending lock: %w", err)
	}
	return n == 1, nil
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

// GetBackoff reads the backoff under key. One that does not decode is
// reported as ErrNotFound: it cannot say how long to wait; so is one longer
// than MaxBackoffBytes, which is not even read.
func (s *RedisStore) GetBackoff(ctx context.Context, key string) (*Backoff, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	raw, err := s.getBounded(ctx, key, MaxBackoffBytes, "backoff")
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if errors.Is(err, errTooLarge) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("tokencache: reading backoff: %w", err)
	}
	var b Backoff
	if err := json.Unmarshal(raw, &b); err != nil {
		return nil, fmt.Errorf("%w: decoding backoff %s: %s", ErrNotFound, key, jsonErrorKind(err))
	}
	return &b, nil
}

// SetBackoff writes b as JSON under key, expiring after ttl; without its
// message if it would be longer than MaxBackoffBytes.
func (s *RedisStore) SetBackoff(ctx context.Context, key string, b *Backoff, ttl time.Duration) error {
	if ttl <= 0 {
		return errNonPositiveTTL
	}
	raw, err := json.Marshal(b)
	if err == nil && len(raw) > MaxBackoffBytes {
		// Other replicas would not read it: share the pause without its text.
		short := *b
		short.Message = ""
		raw, err = json.Marshal(&short)
	}
	if err != nil {
		return fmt.Errorf("tokencache: encoding backoff: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	if err := s.client.Set(ctx, key, raw, ttl).Err(); err != nil {
		return fmt.Errorf("tokencache: writing backoff: %w", err)
	}
	return nil
}

// DeleteBackoff deletes the backoff under key.
func (s *RedisStore) DeleteBackoff(ctx context.Context, key string) error {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	if err := s.client.Del(ctx, key).Err(); err != nil {
		return fmt.Errorf("tokencache: deleting backoff: %w", err)
	}
	return nil
}

// Close stops the shared subscription and closes the client.
func (s *RedisStore) Close() error {
	s.stopSubscription()
	return s.client.Close()
}

var (
	_ Store         = (*RedisStore)(nil)
	_ Authenticator = (*RedisStore)(nil)
)
