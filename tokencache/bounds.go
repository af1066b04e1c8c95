package tokencache

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Bounds on what is read from the store: every value read from Redis is
// checked against its bound before it is sent (see getBounded), so
// that a Redis writer cannot make a replica read, parse, hold or serve a
// value of any size. Each bound is well above what a replica writes.
const (
	// MaxRecordBytes bounds a stored record (JSON, or sealed JSON): 64 KiB,
	// many times an Entra access token. A larger record is not read (a
	// miss, logged), and one this replica would write is not shared.
	MaxRecordBytes = 64 << 10
	// MaxBackoffBytes bounds a stored backoff: 8 KiB, room for the 1 KiB
	// message a replica writes even when JSON escapes each of its bytes
	// (\u003c is 6 bytes). A larger backoff is not read (no backoff,
	// logged); a replica whose backoff would be larger writes it without
	// its message.
	MaxBackoffBytes = 8 << 10
	// MaxAnnouncementBytes bounds the message of an announcement on an
	// update channel: 256 bytes (a replica sends a 32-byte publisher ID).
	// A longer one is ignored. Pub/sub messages are read whole by the Redis
	// client; Redis's client-output-buffer-limit for pubsub clients bounds
	// what a publisher can queue.
	MaxAnnouncementBytes = 256
)

// errTooLarge is wrapped by the errors of values over their bound.
var errTooLarge = errors.New("tokencache: value over its size limit")

// getBounded reads the string under key if it is at most limit bytes:
// GETRANGE of its first limit+1 bytes, so that at most one byte more than
// the bound leaves Redis and an oversized value is never sent whole (one
// round trip, no script). It returns redis.Nil when there is none (Redis
// answers a missing key, and an empty value, with an empty string: no
// record or backoff is empty), and an error wrapping both ErrNotFound and
// errTooLarge when it is longer; what names the kind of value in that
// error.
func (s *RedisStore) getBounded(ctx context.Context, key string, limit int, what string) ([]byte, error) {
	v, err := s.client.GetRange(ctx, key, 0, int64(limit)).Bytes()
	if err != nil {
		return nil, err
	}
	if len(v) == 0 {
		return nil, redis.Nil
	}
	if len(v) > limit {
		return nil, fmt.Errorf("%w: %s %s is over the %d-byte limit (%w)", ErrNotFound, what, key, limit, errTooLarge)
	}
	return v, nil
}

// discardMessage is the log message for a record read that err (wrapping
// ErrNotFound) made a miss.
func discardMessage(err error) string {
	if errors.Is(err, errTooLarge) {
		return "discarding a token record larger than any replica writes (possible tampering)"
	}
	return "discarding a token record that does not decode"
}

// cutStoredBackoff cuts the texts of a backoff read from the store to what
// a replica writes (see recordFailure), so that no more is served to a
// client.
func cutStoredBackoff(b *Backoff) {
	b.Message = truncate(b.Message, maxBackoffMessage)
}
