package tokencache

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned by Store.Get when there is no usable record: none
// under the key, or one that does not decode (then the error wraps
// ErrNotFound and says why).
var ErrNotFound = errors.New("tokencache: record not found")

// Store is the shared level (L2) of the cache. Implementations must be safe
// for concurrent use. The cache treats any error other than ErrNotFound as
// the store being unavailable and carries on without it.
type Store interface {
	// Get returns the record under key, or (nil, ErrNotFound).
	Get(ctx context.Context, key string) (*ClientCredential, error)
	// Set writes rec under key for ttl (ttl must be positive).
	Set(ctx context.Context, key string, rec *ClientCredential, ttl time.Duration) error
	// TryLock takes lockKey for ttl if nobody holds it, returning a random
	// owner token that Unlock needs; ok is false if another owner holds it.
	TryLock(ctx context.Context, lockKey string, ttl time.Duration) (owner string, ok bool, err error)
	// Unlock releases lockKey if owner still holds it, and reports whether
	// it did: a holder whose lock expired must not release the next one's.
	Unlock(ctx context.Context, lockKey, owner string) (bool, error)
	// Close frees the store's resources.
	Close() error
}

var errNonPositiveTTL = errors.New("tokencache: ttl must be positive")
