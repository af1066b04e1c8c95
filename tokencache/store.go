package tokencache

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned by Store.Get when there is no usable record: none
// under the key, or one that does not decode or open (then the error wraps
// ErrNotFound and says why). Store.GetBackoff returns it when no backoff
// runs.
var ErrNotFound = errors.New("tokencache: record not found")

// Store is the shared level (L2) of the cache. Implementations must be safe
// for concurrent use. The cache treats any error other than ErrNotFound as
// the store being unavailable and carries on without it.
type Store interface {
	// Get returns the record under key, or (nil, ErrNotFound).
	Get(ctx context.Context, key string) (*Record, error)
	// Set writes rec under key for ttl (ttl must be positive).
	Set(ctx context.Context, key string, rec *Record, ttl time.Duration) error
	// DeleteRecord deletes the record under key only if it still holds
	// accessToken, and reports whether it did.
	DeleteRecord(ctx context.Context, key, accessToken string) (bool, error)
	// RemoveRecord deletes the record under key, whatever it holds.
	RemoveRecord(ctx context.Context, key string) error

	// TryLock takes lockKey for ttl if nobody holds it, returning a random
	// owner token that Unlock needs; ok is false if another owner holds it.
	TryLock(ctx context.Context, lockKey string, ttl time.Duration) (owner string, ok bool, err error)
	// ExtendLock resets lockKey's ttl if owner still holds it, and reports
	// whether it did.
	ExtendLock(ctx context.Context, lockKey, owner string, ttl time.Duration) (bool, error)
	// Unlock releases lockKey if owner still holds it, and reports whether
	// it did: a holder whose lock expired must not release the next one's.
	Unlock(ctx context.Context, lockKey, owner string) (bool, error)

	// GetBackoff returns the backoff under key, or (nil, ErrNotFound).
	GetBackoff(ctx context.Context, key string) (*Backoff, error)
	// SetBackoff writes b under key for ttl (ttl must be positive).
	SetBackoff(ctx context.Context, key string, b *Backoff, ttl time.Duration) error
	// DeleteBackoff deletes the backoff under key, if any.
	DeleteBackoff(ctx context.Context, key string) error

	// Publish announces on channel, to the other processes sharing the
	// store, that the record under key or its backoff changed. rec, when
	// not nil, is the record just written under key: the announcement
	// carries it (as the store holds it: sealed, with encryption keys), so
	// that watchers need not read it.
	Publish(ctx context.Context, key, channel string, rec *Record) error

	// Watch registers a lasting subscriber on channel, the announcements of
	// the record under key, until cancel is called: the returned channel
	// receives after each Publish by another process (without blocking:
	// the latest announcement replaces one not yet received) the record
	// the announcement carried, decoded as Get decodes one, or nil when it
	// carried none (or one that does not decode): then read the store. It
	// may never receive if the store cannot subscribe, so callers also
	// poll. It is nil when no other process shares the store (MemoryStore).
	Watch(ctx context.Context, key, channel string) (updates <-chan *Record, cancel func())

	// Authenticates reports whether a record read from the store was
	// written by a trusted writer: one holding the store's secret
	// (redisstore with encryption keys) or this process (MemoryStore).
	Authenticates() bool
	// KeyPrefix returns the prefix of the store's record keys (see
	// RecordKey).
	KeyPrefix() string

	// Close frees the store's resources.
	Close() error
}

// Backoff is the shared failure state of one record key: until Until no
// replica calls the token endpoint for it (for a permanent failure, no
// replica with the same credential; see CredentialID). Failures local to
// one replica (no answer from the endpoint, a token the cache rejected) are
// never shared. It holds no token and no secret;
// in Redis it is JSON under BackoffKey, expiring at Until.
type Backoff struct {
	// Until is when token requests may resume.
	Until time.Time `json:"until"`
	// Permanent is true for a failure that retrying will not fix soon (a
	// wrong secret...), which backs off longer; callers' errors are then
	// Permanent, else they have a RetryAfter.
	Permanent bool `json:"permanent"`
	// Attempts is how many consecutive fetches have failed.
	Attempts int `json:"attempts"`
	// Message is the last failure's message, safe to show a client.
	Message string `json:"message,omitempty"`
	// CredentialID is the credential fingerprint (Application's
	// CredentialIDFunc) of the replica whose fetch failed. A permanent backoff binds only applications with the
	// same CredentialID (a credential another replica has rotated away
	// from must not pause this one); a transient backoff binds everyone.
	CredentialID string `json:"credentialId,omitempty"`
}

// ErrUnverifiable is wrapped by an Application.VerifyStored error that
// means the record cannot be checked against its identity (as opposed to a
// record of another identity).
var ErrUnverifiable = errors.New("tokencache: token record cannot be verified against its identity")

var errNonPositiveTTL = errors.New("tokencache: ttl must be positive")
