package tokencache

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"
)

// exchangeKeyInfo separates the key of exchange entries from every other
// use of the fleet's secret.
const exchangeKeyInfo = "caddy-entra on-behalf-of entry key v1"

// DeriveExchangeKey returns the key that names exchange entries in the
// store (ExchangeOptions.HashKey), derived from the fleet's secret (the
// store's first encryption key) with HMAC-SHA-256, so that it is the same
// on every replica holding that secret and no other use of the secret
// shares it.
func DeriveExchangeKey(secret []byte) []byte {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(exchangeKeyInfo))
	return mac.Sum(nil)
}

// randomExchangeKey is a process's own entry key, when there is no fleet
// secret: its entries are never found by another process.
func randomExchangeKey() []byte {
	key := make([]byte, sha256.Size)
	_, _ = rand.Read(key) // crypto/rand.Read never fails (it crashes the program instead)
	return key
}

// exchangeEntryKey returns the store key of the exchange entry of one user
// token for one application identity and scope set:
//
//	prefix + "{" + hex(HMAC-SHA-256(hashKey, info, identity, sorted scopes, user token))[:32] + "}:token"
//
// A reader of the store who lacks hashKey cannot tell which user token an
// entry belongs to, nor test a token it holds against the keys. The braces
// are the Redis Cluster hash tag the entry's lock and update channel share.
func exchangeEntryKey(prefix string, hashKey []byte, identity string, scopes []string, userToken string) string {
	return prefix + "{" + exchangeDigest(hashKey, identity, scopes, userToken) + "}" + recordSuffix
}

// exchangeDropKey returns the key under whose update channel an
// application's exchanger announces the entries it drops (exchangeEntryKey
// with no user token).
func exchangeDropKey(prefix string, hashKey []byte, identity string, scopes []string) string {
	return prefix + "{" + exchangeDigest(hashKey, identity+"\ndrops", scopes, "") + "}" + recordSuffix
}

// exchangeDigest is the truncated HMAC of an entry's parts, each length
// delimited by a line feed (none of them holds one: a user token is a JWT,
// scopes have no white space, identities are URLs and IDs).
func exchangeDigest(hashKey []byte, identity string, scopes []string, userToken string) string {
	sorted := slices.Clone(scopes)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	mac := hmac.New(sha256.New, hashKey)
	mac.Write([]byte(exchangeKeyInfo + "\n" + identity + "\n" + strings.Join(sorted, " ") + "\n" + userToken))
	return hex.EncodeToString(mac.Sum(nil))[:32]
}
