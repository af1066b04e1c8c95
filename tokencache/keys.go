package tokencache

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"
)

// DefaultKeyPrefix is the default prefix of record keys (MemoryStore's,
// and redisstore's when none is configured).
const DefaultKeyPrefix = "entra:"

const (
	recordSuffix  = ":token"
	lockSuffix    = ":lock"
	backoffSuffix = ":backoff"
	updateSuffix  = ":updated"
)

// RecordKey returns the store key of an application's record:
//
//	prefix + "{" + hex(sha256(CacheKey + "\n" + sorted scopes joined by " "))[:32] + "}:token"
//
// The key depends on what makes a token distinct, not on the application
// name: two applications with the same identity and scope set share one
// record (they would get the same token), different identities never do. The
// braces are a Redis Cluster hash tag, shared with LockKey, BackoffKey and
// UpdateChannel, so every key of one record lives in one slot.
func RecordKey(prefix string, app Application) string {
	scopes := slices.Clone(app.Scopes)
	slices.Sort(scopes)
	scopes = slices.Compact(scopes)
	sum := sha256.Sum256([]byte(app.CacheKey + "\n" + strings.Join(scopes, " ")))
	return prefix + "{" + hex.EncodeToString(sum[:])[:32] + "}" + recordSuffix
}

// LockKey returns the key of the refresh lock of a record key: the same
// prefix and hash tag (so the same Redis Cluster slot), ending in ":lock".
func LockKey(recordKey string) string {
	return strings.TrimSuffix(recordKey, recordSuffix) + lockSuffix
}

// BackoffKey returns the key of the shared failure backoff of a record key:
// the same prefix and hash tag, ending in ":backoff".
func BackoffKey(recordKey string) string {
	return strings.TrimSuffix(recordKey, recordSuffix) + backoffSuffix
}

// UpdateChannel returns the pub/sub channel on which the replica that wrote
// a record key (or its backoff) announces it: the same prefix and hash tag,
// ending in ":updated".
func UpdateChannel(recordKey string) string {
	return strings.TrimSuffix(recordKey, recordSuffix) + updateSuffix
}
