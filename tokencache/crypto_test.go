package tokencache

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// testKey returns a 32-byte key filled with b.
func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

// keyID is the id that names key in a sealed record: the first 8 hex
// characters of its SHA-256.
func keyID(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:])[:8]
}

func TestEncryptionAtRest(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	app := testApp("graph-api", nil)
	key := RecordKey(DefaultKeyPrefix, app)
	k1, k2, k3 := testKey(1), testKey(2), testKey(3)

	// tokenFrom returns what a replica with keys gets, and its fetch count.
	tokenFrom := func(keys ...[]byte) (string, int64) {
		t.Helper()
		f := newFakeFetcher(clock)
		c, _ := newTestCache(t, newEncryptedStore(t, mr, keys...), clock, testApp("graph-api", f.Fetch))
		rec, err := c.Token(t.Context(), "graph-api")
		if err != nil {
			t.Fatal(err)
		}
		return rec.AccessToken, f.calls.Load()
	}

	first, _ := tokenFrom(k1)
	raw, _ := mr.Get(key)
	if !strings.HasPrefix(raw, "v1."+keyID(k1)+".") {
		t.Errorf("record %.20q... is not sealed with key 1's id", raw)
	}
	if strings.Contains(raw, first) || strings.Contains(raw, "accessToken") {
		t.Error("the sealed record shows the token or the JSON")
	}
	if _, err := base64.RawURLEncoding.DecodeString(strings.SplitN(raw, ".", 3)[2]); err != nil {
		t.Errorf("payload is not base64url: %v", err)
	}
	if tok, n := tokenFrom(k1); tok != first || n != 0 {
		t.Errorf("same key: %q after %d fetches, want the stored token and none", tok, n)
	}
	if _, n := tokenFrom(k3, k1); n != 0 {
		t.Errorf("rotation (new key first, old second): %d fetches, want 0: the old key opens", n)
	}

	// Another key cannot open it: a miss, overwritten with its own seal.
	if _, n := tokenFrom(k2); n != 1 {
		t.Errorf("another key: %d fetches, want 1", n)
	}
	if raw, _ := mr.Get(key); !strings.HasPrefix(raw, "v1."+keyID(k2)+".") {
		t.Error("record not overwritten under the other key")
	}

	// Tampered ciphertext: a miss.
	raw, _ = mr.Get(key)
	payload := []byte(raw)
	payload[len(payload)-5] ^= 'A' ^ 'B'
	if payload[len(payload)-5] == raw[len(raw)-5] {
		payload[len(payload)-5] = 'Q'
	}
	mr.Set(key, string(payload))
	if _, n := tokenFrom(k2); n != 1 {
		t.Errorf("tampered record: %d fetches, want 1", n)
	}

	// A sealed record copied under another record key does not open there.
	raw, _ = mr.Get(key)
	other := Application{Name: "orders-api", CacheKey: testCacheKey, Scopes: []string{"api://orders/.default"}}
	otherKey := RecordKey(DefaultKeyPrefix, other)
	mr.Set(otherKey, raw)
	f := newFakeFetcher(clock)
	other.Fetch = f.Fetch
	c, _ := newTestCache(t, newEncryptedStore(t, mr, k2), clock, other)
	if _, err := c.Token(t.Context(), "orders-api"); err != nil || f.calls.Load() != 1 {
		t.Errorf("copied record: %v after %d fetches, want a miss and 1 fetch", err, f.calls.Load())
	}

	// A plain record is a miss once encryption is on, and a sealed one
	// without keys.
	plain, _ := json.Marshal(Record{ID: key, AccessToken: "injected", AccessTokenExpiresAt: clock.Now().Add(time.Hour)})
	mr.Set(key, string(plain))
	if tok, n := tokenFrom(k2); tok == "injected" || n != 1 {
		t.Errorf("plain record with encryption on: %q after %d fetches, want a miss", tok, n)
	}
	if _, n := tokenFrom(); n != 1 {
		t.Errorf("sealed record without keys: %d fetches, want a miss", n)
	}
}
