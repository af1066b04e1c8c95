package tokencache

import "errors"

// Bounds on what a store reads (redisstore reads at most one byte more), so
// that a writer of the store cannot make a replica read, parse, hold or
// serve a value of any size. Each is well above what a replica writes.
const (
	// MaxRecordBytes bounds a stored record: 64 KiB. A larger one is not
	// read (a miss, logged), nor written.
	MaxRecordBytes = 64 << 10
	// MaxBackoffBytes bounds a stored backoff: 8 KiB, room for a 1 KiB
	// message with every byte JSON-escaped. A larger one is not read, and is
	// written without its message.
	MaxBackoffBytes = 8 << 10
	// MaxPurgeMarkBytes bounds a stored purge mark: 1 KiB, room for the
	// two tokens at most a replica names (about 400 bytes sealed).
	// A larger one is not read (no mark), nor written.
	MaxPurgeMarkBytes = 1 << 10
	// MaxAnnouncementBytes bounds an announcement (a 32-byte publisher ID
	// and perhaps a record); a longer one is ignored. Redis's
	// client-output-buffer-limit bounds what a publisher can queue.
	MaxAnnouncementBytes = MaxRecordBytes + 256
)

// ErrTooLarge is wrapped by a Store's errors about a value over its bound
// (when reading, with ErrNotFound).
var ErrTooLarge = errors.New("tokencache: value over its size limit")
