package tokencache

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"slices"
	"strings"
	"sync"
)

// exchangeKeyInfo separates the entry key from other uses of the secret.
const exchangeKeyInfo = "caddy-entra on-behalf-of entry key v1"

// DeriveExchangeKey returns ExchangeOptions.HashKey from the fleet's secret
// (the store's first encryption key) with HMAC-SHA-256: the same on every
// replica, shared with no other use of the secret.
func DeriveExchangeKey(secret []byte) []byte {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(exchangeKeyInfo))
	return mac.Sum(nil)
}

// entryDigest names one user token's entry: the first 16 bytes of
// HMAC-SHA-256(hashKey, info, identity, sorted scopes, user token), so that
// a reader of the store without hashKey cannot tell whose entry it is.
type entryDigest [16]byte

// entryNamer computes the entry digests of one identity and scope set,
// reusing HMAC states and buffers (the hot path computes one per request).
type entryNamer struct {
	prefix []byte // info, identity and sorted scopes, each line ended
	states sync.Pool
}

// namerState is a reusable HMAC and the buffer a user token is copied into
// (a 2 KB conversion per request would cost more than the lookup).
type namerState struct {
	mac hash.Hash
	buf []byte
	sum [sha256.Size]byte
}

func newEntryNamer(hashKey []byte, identity string, scopes []string) *entryNamer {
	sorted := slices.Clone(scopes)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	n := &entryNamer{prefix: []byte(exchangeKeyInfo + "\n" + identity + "\n" + strings.Join(sorted, " ") + "\n")}
	n.states.New = func() any { return &namerState{mac: hmac.New(sha256.New, hashKey)} }
	return n
}

// digest returns the entry digest of userToken (no line feed: a JWT).
func (n *entryNamer) digest(userToken string) entryDigest {
	s := n.states.Get().(*namerState)
	s.mac.Reset()
	s.buf = append(append(s.buf[:0], n.prefix...), userToken...)
	s.mac.Write(s.buf)
	clear(s.buf) // the user token does not linger in the pool
	var d entryDigest
	copy(d[:], s.mac.Sum(s.sum[:0]))
	n.states.Put(s)
	return d
}

// exchangeEntryKey returns an entry's store key, prefix + "{" + hex(digest)
// + "}:token": a hash tag shared with its lock and update channel.
func exchangeEntryKey(prefix string, d entryDigest) string {
	return prefix + "{" + hex.EncodeToString(d[:]) + "}" + recordSuffix
}

// parseEntryKey returns the digest of an entry's store key.
func parseEntryKey(prefix, key string) (entryDigest, bool) {
	var d entryDigest
	tag, ok := strings.CutPrefix(key, prefix+"{")
	if !ok {
		return d, false
	}
	tag, ok = strings.CutSuffix(tag, "}"+recordSuffix)
	if !ok || hex.DecodedLen(len(tag)) != len(d) {
		return d, false
	}
	_, err := hex.Decode(d[:], []byte(tag))
	return d, err == nil
}

// exchangeDropKey returns the key on whose channel an exchanger announces
// its drops: an entry's of a "user token" no JWT can be.
func exchangeDropKey(prefix string, n *entryNamer) string {
	return exchangeEntryKey(prefix, n.digest("\ndrops"))
}
