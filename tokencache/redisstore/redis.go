// Package redisstore is the Redis store of tokencache (standalone, Sentinel
// or Cluster): records, refresh locks and backoffs under the keys tokencache
// derives, one pattern subscription for announcements, records optionally
// sealed with AES-256-GCM. It imports tokencache; tokencache never imports it.
package redisstore

import (
	"cmp"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-entra/caddy-entra/tokencache"
)

var (
	//go:embed unlock.lua
	unlockLua string
	//go:embed extend.lua
	extendLua string
	//go:embed lock.lua
	lockLua string

	// Compare-and-delete (a lock, or a record whose stored value is
	// unchanged), compare-and-PEXPIRE (a held lock) and SET NX PX that
	// takes over a lock only a Redis writer sets (see lock.lua).
	unlockScript = redis.NewScript(unlockLua)
	extendScript = redis.NewScript(extendLua)
	lockScript   = redis.NewScript(lockLua)
)

var errNonPositiveTTL = errors.New("tokencache: ttl must be positive")

// Store is a tokencache.Store in Redis (standalone, Sentinel or Cluster).
// Records are JSON (or sealed, see Options.EncryptionKeys) expiring with
// their token; locks are SET NX PX with a random owner, extended and
// released by compare-and-swap scripts; backoffs are JSON expiring when
// they end; announcements are PUBLISHed, received by one shared pattern
// subscription.
type Store struct {
	client           redis.UniversalClient
	keyPrefix        string
	opTimeout        time.Duration
	slots            chan struct{} // calls in flight, at most the pool's size (see op)
	sealer           *sealer
	answers          *answers // when Redis last answered (see retryingTimeouts)
	maxConnectionAge time.Duration

	watchers    watchers
	publisherID string // random: the message of this store's announcements
	// subMu guards the shared subscription, started by the first Watch:
	// subReady is closed once confirmed, until subWait at the latest,
	// subCancel ends it, subDone is closed when its goroutine has.
	subMu     sync.Mutex
	subReady  chan struct{}
	subWait   time.Time
	subCancel context.CancelFunc
	subDone   chan struct{}
	closed    bool
}

// New makes a client from opts. It does not connect (an unreachable Redis
// must not fail the sidecar at start; see Ping). Errors never contain a
// password or an encryption key.
func New(opts Options) (*Store, error) {
	client, err := opts.newClient()
	if err != nil {
		return nil, err
	}
	return newStore(client, opts)
}

// newStore returns a store on client, which it closes if opts are refused.
// OpTimeout is enforced only if the client has ContextTimeoutEnabled.
func newStore(client redis.UniversalClient, opts Options) (*Store, error) {
	opts.KeyPrefix = cmp.Or(opts.KeyPrefix, tokencache.DefaultKeyPrefix)
	if opts.OpTimeout <= 0 {
		opts.OpTimeout = DefaultOpTimeout
	}
	if strings.ContainsAny(opts.KeyPrefix, "{}") { // Cluster would hash the prefix's tag
		_ = client.Close()
		return nil, errors.New(`tokencache: redis: key_prefix must not contain "{" or "}" (they would break the Redis Cluster hash tag of the keys)`)
	}
	sealer, err := newSealer(opts.EncryptionKeys)
	if err != nil {
		_ = client.Close()
		return nil, err
	}
	slots := make(chan struct{}, poolSize(client))
	answers := &answers{born: time.Now()}
	client.AddHook(answers)
	return &Store{client: client, keyPrefix: opts.KeyPrefix, opTimeout: opts.OpTimeout, slots: slots, sealer: sealer,
		answers: answers, maxConnectionAge: opts.MaxConnectionAge, publisherID: tokencache.NewOwner()}, nil
}

// KeyPrefix returns the key prefix to give RecordKey.
func (s *Store) KeyPrefix() string { return s.keyPrefix }

// Client returns the underlying client.
func (s *Store) Client() redis.UniversalClient { return s.client }

// Authenticates reports whether records are sealed (AES-GCM): only holders
// of a key can write one.
func (s *Store) Authenticates() bool { return s.sealer != nil }

// Ping checks that Redis answers within OpTimeout.
func (s *Store) Ping(ctx context.Context) error {
	ctx, _, cancel := s.op(ctx, s.opTimeout, s.opTimeout)
	defer cancel()
	if err := s.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("tokencache: pinging redis: %w", err)
	}
	return nil
}

// Get reads and decodes the record under key. One that does not decode or
// open, or is over tokencache.MaxRecordBytes (not read), is an error
// wrapping tokencache.ErrNotFound: a miss the next refresh overwrites.
func (s *Store) Get(ctx context.Context, key string) (*tokencache.Record, error) {
	rec, _, err := s.get(ctx, key)
	return rec, err
}

// get returns the record under key and its raw stored value.
func (s *Store) get(ctx context.Context, key string) (*tokencache.Record, []byte, error) {
	raw, err := s.getBounded(ctx, key, tokencache.MaxRecordBytes, "record")
	if err != nil {
		return nil, nil, err
	}
	rec, err := s.decode(key, raw)
	return rec, raw, err
}

// decode returns the record stored as raw under key, or an error wrapping
// tokencache.ErrNotFound.
func (s *Store) decode(key string, raw []byte) (*tokencache.Record, error) {
	var rec tokencache.Record
	if err := s.unmarshal(key, raw, "record", &rec); err != nil {
		return nil, err
	}
	return &rec, nil
}

// marshal returns v, what (record, backoff or purge mark), as stored under key:
// JSON, sealed if the store seals; past limit bytes, an error wrapping
// tokencache.ErrTooLarge.
func (s *Store) marshal(key string, v any, limit int, what string) ([]byte, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("tokencache: encoding %s: %w", what, err)
	}
	if s.sealer != nil {
		raw = s.sealer.seal(key, raw)
	}
	if len(raw) > limit {
		return nil, fmt.Errorf("tokencache: not writing %s %s: %d bytes, over the %d-byte limit (%w)", what, key, len(raw), limit, tokencache.ErrTooLarge)
	}
	return raw, nil
}

// unmarshal decodes into v what marshal stored as raw under key, or
// returns an error wrapping tokencache.ErrNotFound.
func (s *Store) unmarshal(key string, raw []byte, what string, v any) error {
	plain, err := raw, error(nil)
	switch {
	case s.sealer != nil && isSealed(raw):
		plain, err = s.sealer.open(key, raw)
	case s.sealer != nil:
		err = errNotSealed
	case isSealed(raw):
		err = errSealedNoKeys
	}
	if err != nil {
		return fmt.Errorf("%w: decoding %s %s: %v", tokencache.ErrNotFound, what, key, err)
	}
	if err := json.Unmarshal(plain, v); err != nil {
		// Not %w: a json error can quote part of the value.
		return fmt.Errorf("%w: decoding %s %s: %s", tokencache.ErrNotFound, what, key, jsonErrorKind(err))
	}
	return nil
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

// Set writes rec under key for ttl; not one over tokencache.MaxRecordBytes
// (the error wraps tokencache.ErrTooLarge).
func (s *Store) Set(ctx context.Context, key string, rec *tokencache.Record, ttl time.Duration) error {
	if ttl <= 0 {
		return errNonPositiveTTL
	}
	raw, err := s.marshal(key, rec, tokencache.MaxRecordBytes, "record")
	if err != nil {
		return err
	}
	return s.set(ctx, key, raw, ttl, "record")
}

// set writes raw, what (record, backoff or purge mark), under key for ttl.
func (s *Store) set(ctx context.Context, key string, raw []byte, ttl time.Duration, what string) error {
	return s.do(ctx, "writing "+what, func(ctx context.Context) error {
		return s.client.Set(ctx, key, raw, ttl).Err()
	})
}

// DeleteRecord deletes the record under key if it holds accessToken and its
// stored value is unchanged since read (compare-and-delete).
func (s *Store) DeleteRecord(ctx context.Context, key, accessToken string) (bool, error) {
	rec, raw, err := s.get(ctx, key)
	if errors.Is(err, tokencache.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if rec.AccessToken != accessToken {
		return false, nil
	}
	return s.runScript(ctx, unlockScript, "deleting record", key, raw)
}

// runScript runs script on key with args, reporting whether it returned 1.
func (s *Store) runScript(ctx context.Context, script *redis.Script, doing, key string, args ...any) (bool, error) {
	var n int64
	err := s.do(ctx, doing, func(ctx context.Context) (err error) {
		n, err = script.Run(ctx, s.client, []string{key}, args...).Int64()
		return err
	})
	return err == nil && n == 1, err
}

// takeOverAfter is how long a lock must have left for TryLock to take it
// over as a Redis writer's: three times what a replica sets, so that a
// failover to a Redis whose clock is behind (up to twice the ttl) takes no
// replica's lock. Locks of one kind last as long on every replica of one
// LockTTL (a refresh lock LockTTL, an exchange lock a tenth of it).
func takeOverAfter(ttl time.Duration) time.Duration {
	return 3 * ttl
}

// TryLock is SET lockKey <random owner> NX PX ttl, taking over a lock with
// no expiry, a value of another type, or one that runs longer than
// takeOverAfter(ttl) (see lock.lua).
func (s *Store) TryLock(ctx context.Context, lockKey string, ttl time.Duration) (string, bool, error) {
	if ttl <= 0 {
		return "", false, errNonPositiveTTL
	}
	owner := tokencache.NewOwner()
	var ok, sent, mayHold bool
	err := s.do(ctx, "taking lock", func(ctx context.Context) error {
		if sent { // a timed-out attempt may have taken the lock
			// One byte more than owner: a planted value never leaves Redis whole.
			held, err := s.client.GetRange(ctx, lockKey, 0, int64(len(owner))).Result()
			if err != nil {
				return err
			}
			if held == owner {
				ok = true
				return nil
			}
		}
		sent = true
		n, err := lockScript.Run(ctx, s.client, []string{lockKey}, owner, ttl.Milliseconds(), takeOverAfter(ttl).Milliseconds()).Int64()
		ok = n == 1
		mayHold = mayHold || isTimeout(err)
		return err
	})
	if err != nil {
		if mayHold { // an attempt that timed out may have taken it
			go s.releaseAbandoned(lockKey, owner, ttl)
		}
		return "", false, err
	}
	if !ok {
		return "", false, nil
	}
	return owner, true, nil
}

// releaseAbandoned deletes lockKey if it holds owner, trying again after
// OpTimeout, doubling, until ttl has passed (the lock then expires anyway)
// or the store is closed: TryLock failed after an attempt that timed out
// and may have taken the lock (a replica starved of CPU, a lost answer),
// and a lock nobody uses would hold the fleet's waiters for the rest of
// its ttl.
func (s *Store) releaseAbandoned(lockKey, owner string, ttl time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), ttl)
	defer cancel()
	for wait := s.opTimeout; ; wait *= 2 {
		if _, err := s.Unlock(ctx, lockKey, owner); err == nil || errors.Is(err, redis.ErrClosed) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// ExtendLock resets lockKey's ttl if it still holds owner (see extend.lua).
func (s *Store) ExtendLock(ctx context.Context, lockKey, owner string, ttl time.Duration) (bool, error) {
	if ttl <= 0 {
		return false, errNonPositiveTTL
	}
	return s.runScript(ctx, extendScript, "extending lock", lockKey, owner, ttl.Milliseconds())
}

// Unlock deletes lockKey if it still holds owner (see unlock.lua).
func (s *Store) Unlock(ctx context.Context, lockKey, owner string) (bool, error) {
	return s.runScript(ctx, unlockScript, "releasing lock", lockKey, owner)
}

// GetBackoff reads the backoff under key; one that does not decode (or,
// when the store seals, is not sealed with one of its keys for key) or is
// over tokencache.MaxBackoffBytes (not read) is tokencache.ErrNotFound.
func (s *Store) GetBackoff(ctx context.Context, key string) (*tokencache.Backoff, error) {
	raw, err := s.getBounded(ctx, key, tokencache.MaxBackoffBytes, "backoff")
	if err != nil {
		return nil, err
	}
	var b tokencache.Backoff
	if err := s.unmarshal(key, raw, "backoff", &b); err != nil {
		return nil, err
	}
	return &b, nil
}

// SetBackoff writes b under key for ttl, sealed as records are (a Redis
// writer without the key must not choose the message paused requests are
// answered with), without its message if it would be over
// tokencache.MaxBackoffBytes (other replicas would not read it).
func (s *Store) SetBackoff(ctx context.Context, key string, b *tokencache.Backoff, ttl time.Duration) error {
	if ttl <= 0 {
		return errNonPositiveTTL
	}
	raw, err := s.marshal(key, b, tokencache.MaxBackoffBytes, "backoff")
	if errors.Is(err, tokencache.ErrTooLarge) {
		short := *b
		short.Message = ""
		raw, err = s.marshal(key, &short, tokencache.MaxBackoffBytes, "backoff")
	}
	if err != nil {
		return err
	}
	return s.set(ctx, key, raw, ttl, "backoff")
}

// RemoveRecord deletes the record under key, whatever it holds.
func (s *Store) RemoveRecord(ctx context.Context, key string) error { return s.del(ctx, key, "record") }

// DeleteBackoff deletes the backoff under key.
func (s *Store) DeleteBackoff(ctx context.Context, key string) error {
	return s.del(ctx, key, "backoff")
}

func (s *Store) del(ctx context.Context, key, what string) error {
	return s.do(ctx, "deleting "+what, func(ctx context.Context) error {
		return s.client.Del(ctx, key).Err()
	})
}

// getBounded reads what (record, backoff or purge mark) under key if at
// most limit bytes: GETRANGE of limit+1 bytes, so an oversized value never
// leaves Redis whole. None (an empty string) is tokencache.ErrNotFound; a
// longer one also wraps tokencache.ErrTooLarge; a value of another type (a
// list) wraps tokencache.ErrNotFound.
func (s *Store) getBounded(ctx context.Context, key string, limit int, what string) ([]byte, error) {
	var v []byte
	if err := s.do(ctx, "reading "+what, func(ctx context.Context) (err error) {
		v, err = s.client.GetRange(ctx, key, 0, int64(limit)).Bytes()
		return err
	}); redis.HasErrorPrefix(err, "WRONGTYPE") {
		// Redis answered: a writer's doing, not an outage.
		return nil, fmt.Errorf("%w: %s %s holds a value of another type than a string", tokencache.ErrNotFound, what, key)
	} else if err != nil {
		return nil, err
	}
	if len(v) == 0 {
		return nil, tokencache.ErrNotFound
	}
	if len(v) > limit {
		return nil, fmt.Errorf("%w: %s %s is over the %d-byte limit (%w)", tokencache.ErrNotFound, what, key, limit, tokencache.ErrTooLarge)
	}
	return v, nil
}

// Close stops the shared subscription and closes the client.
func (s *Store) Close() error {
	s.stopSubscription()
	return s.client.Close()
}

var _ tokencache.Store = (*Store)(nil)
