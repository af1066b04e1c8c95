package tokencache

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is Store.Get's error when there is no usable record (wrapped
// when one does not decode or open), and GetBackoff's when none runs.
var ErrNotFound = errors.New("tokencache: record not found")

// Store is the shared level (L2), safe for concurrent use. Any error but
// ErrNotFound counts as the store being unavailable.
type Store interface {
	// Get returns the record under key, or (nil, ErrNotFound).
	Get(ctx context.Context, key string) (*Record, error)
	// Set writes rec under key for ttl (ttl must be positive).
	Set(ctx context.Context, key string, rec *Record, ttl time.Duration) error
	// DeleteRecord deletes the record under key if it holds accessToken.
	DeleteRecord(ctx context.Context, key, accessToken string) (bool, error)
	// RemoveRecord deletes the record under key, whatever it holds.
	RemoveRecord(ctx context.Context, key string) error

	// TryLock takes lockKey for ttl if nobody holds it, returning a random
	// owner token.
	TryLock(ctx context.Context, lockKey string, ttl time.Duration) (owner string, ok bool, err error)
	// ExtendLock resets lockKey's ttl if owner still holds it.
	ExtendLock(ctx context.Context, lockKey, owner string, ttl time.Duration) (bool, error)
	// Unlock releases lockKey if owner still holds it: a holder whose lock
	// expired must not release the next one's.
	Unlock(ctx context.Context, lockKey, owner string) (bool, error)

	// GetBackoff returns the backoff under key, or (nil, ErrNotFound).
	GetBackoff(ctx context.Context, key string) (*Backoff, error)
	// SetBackoff writes b under key for ttl (ttl must be positive).
	SetBackoff(ctx context.Context, key string, b *Backoff, ttl time.Duration) error
	// DeleteBackoff deletes the backoff under key, if any.
	DeleteBackoff(ctx context.Context, key string) error

	// SetPurgeMark writes under key for ttl (ttl must be positive) a purge
	// mark naming the tokens a replica purged (never the tokens
	// themselves), sealed as records are.
	SetPurgeMark(ctx context.Context, key string, purged []PurgedToken, ttl time.Duration) error
	// GetPurgeMark returns what the purge mark under key names, or (nil,
	// ErrNotFound), wrapped when one does not decode or open.
	GetPurgeMark(ctx context.Context, key string) ([]PurgedToken, error)

	// Publish announces on channel to the other processes that the record
	// under key or its backoff changed, carrying rec (just written, as the
	// store holds it) when not nil.
	Publish(ctx context.Context, key, channel string, rec *Record) error

	// Watch subscribes to channel until cancel: after each Publish by
	// another process, updates receives the record it carried (decoded as
	// Get does) or nil (read the store), the latest replacing one not yet
	// received. It may never receive, so callers also poll; it is nil when
	// no other process shares the store.
	Watch(ctx context.Context, key, channel string) (updates <-chan *Record, cancel func())

	// Authenticates reports whether records read were written by a
	// trusted writer (one holding the store's secret, or this process).
	Authenticates() bool
	// KeyPrefix returns the prefix of the record keys (see RecordKey).
	KeyPrefix() string
	Close() error
}

// Backoff is the shared failure state of one record key: until Until no
// replica calls the token endpoint for it. It holds no token and no secret;
// in Redis it is JSON under BackoffKey.
type Backoff struct {
	Until time.Time `json:"until"` // when token requests may resume
	// Permanent: retrying will not fix it soon (a wrong secret); a longer
	// backoff, and callers' errors are Permanent instead of RetryAfter.
	Permanent bool   `json:"permanent"`
	Attempts  int    `json:"attempts"`          // consecutive failed fetches
	Message   string `json:"message,omitempty"` // the last failure's, safe to show a client
	// CredentialID is the failing replica's CredentialIDFunc fingerprint:
	// a permanent backoff binds only the same one.
	CredentialID string `json:"credentialId,omitempty"`
}

// ErrUnverifiable is wrapped by a VerifyStored error that means the record
// cannot be checked against its identity (not: another identity's).
var ErrUnverifiable = errors.New("tokencache: token record cannot be verified against its identity")

var errNonPositiveTTL = errors.New("tokencache: ttl must be positive")

// PurgedToken names a purged token in a purge mark: its SHA-256, and the
// newest write of it the purging replica knew. Records of the token
// written then or before are purged; one written later (a managed
// identity's endpoint hands out the token it cached) is not.
type PurgedToken struct {
	Fingerprint [32]byte
	WrittenAt   time.Time
}
