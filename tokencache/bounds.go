package tokencache

import "errors"

// Bounds on what a shared store reads: a store checks every value against
// its bound before it is sent (redisstore reads at most one byte more), so
// that a writer of the store cannot make a replica read, parse, hold or
// serve a value of any size. Each bound is well above what a replica writes.
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
	// update channel: a replica sends a 32-byte publisher ID and, after a
	// fetch, the record it wrote (at most MaxRecordBytes). A longer one is
	// ignored. Pub/sub messages are read whole by the Redis client; Redis's
	// client-output-buffer-limit for pubsub clients bounds what a publisher
	// can queue.
	MaxAnnouncementBytes = MaxRecordBytes + 256
)

// ErrTooLarge is wrapped by a Store's errors about a value over its bound
// (reading one, which is then also ErrNotFound, or writing one).
var ErrTooLarge = errors.New("tokencache: value over its size limit")

// discardMessage is the log message for a record read that err (wrapping
// ErrNotFound) made a miss.
func discardMessage(err error) string {
	if errors.Is(err, ErrTooLarge) {
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
