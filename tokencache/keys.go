package tokencache

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"
)

// DefaultKeyPrefix is the default prefix of record keys.
const DefaultKeyPrefix = "entra:"

const recordSuffix = ":token"

// RecordKey returns the store key of an application's record:
//
//	prefix + "{" + hex(sha256(CacheKey + "\n" + sorted scopes joined by " "))[:32] + "}:token"
//
// Applications with the same identity and scopes share a record; the
// braces are a Redis Cluster hash tag shared with the record's other keys.
func RecordKey(prefix string, app Application) string {
	scopes := slices.Clone(app.Scopes)
	slices.Sort(scopes)
	scopes = slices.Compact(scopes)
	sum := sha256.Sum256([]byte(app.CacheKey + "\n" + strings.Join(scopes, " ")))
	return prefix + "{" + hex.EncodeToString(sum[:])[:32] + "}" + recordSuffix
}

// LockKey returns the key of a record key's refresh lock.
func LockKey(recordKey string) string {
	return strings.TrimSuffix(recordKey, recordSuffix) + ":lock"
}

// BackoffKey returns the key of a record key's shared backoff.
func BackoffKey(recordKey string) string {
	return strings.TrimSuffix(recordKey, recordSuffix) + ":backoff"
}

// UpdateChannel returns the pub/sub channel of a record key's announcements.
func UpdateChannel(recordKey string) string {
	return strings.TrimSuffix(recordKey, recordSuffix) + ":updated"
}

// PurgeMarkKey returns the key of a record key's purge mark (see
// Store.SetPurgeMark).
func PurgeMarkKey(recordKey string) string {
	return strings.TrimSuffix(recordKey, recordSuffix) + ":purged"
}
