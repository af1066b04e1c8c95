package redisstore

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/caddy-entra/caddy-entra/tokencache"
)

// storeOn is a store on mr sealing with keys (none: plaintext).
func storeOn(t *testing.T, mr *miniredis.Miniredis, keys ...[]byte) *Store {
	t.Helper()
	client := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	s, err := newStore(client, Options{EncryptionKeys: keys})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestPurgeMarksAreSealedAndBounded: a purge mark names tokens by their
// fingerprints, sealed and bound to its key when records are: only a
// holder of the key writes one that opens there. One over
// tokencache.MaxPurgeMarkBytes is neither read nor written.
func TestPurgeMarksAreSealedAndBounded(t *testing.T) {
	mr := miniredis.RunT(t)
	store, stranger, plain := storeOn(t, mr, testKey(1)), storeOn(t, mr, testKey(2)), storeOn(t, mr)
	ctx := t.Context()
	recordKey := tokencache.RecordKey(tokencache.DefaultKeyPrefix, testApp("graph-api", nil))
	markKey := tokencache.PurgeMarkKey(recordKey)
	if markKey != strings.TrimSuffix(recordKey, ":token")+":purged" {
		t.Fatalf("PurgeMarkKey(%q) = %q, want the record's hash tag and :purged", recordKey, markKey)
	}
	written := time.Date(2026, 12, 7, 9, 0, 0, 123e6, time.UTC)
	purged := []tokencache.PurgedToken{{Fingerprint: sha256.Sum256([]byte("eyJ.purged.token")), WrittenAt: written},
		{Fingerprint: sha256.Sum256([]byte("eyJ.current.token")), WrittenAt: written.Add(time.Minute)}}
	samePurged := func(got []tokencache.PurgedToken) bool {
		return slices.EqualFunc(got, purged, func(a, b tokencache.PurgedToken) bool {
			return a.Fingerprint == b.Fingerprint && a.WrittenAt.Equal(b.WrittenAt)
		})
	}
	if err := store.SetPurgeMark(ctx, markKey, purged, time.Hour); err != nil {
		t.Fatal(err)
	}
	if got, err := store.GetPurgeMark(ctx, markKey); err != nil || !samePurged(got) {
		t.Errorf("GetPurgeMark() = %v, %v; want %v", got, err, purged)
	}
	raw, _ := mr.Get(markKey)
	if !isSealed([]byte(raw)) || strings.Contains(raw, hex.EncodeToString(purged[0].Fingerprint[:])) {
		t.Errorf("the mark is not sealed: %.40q...", raw)
	}
	if ttl := mr.TTL(markKey); ttl != time.Hour {
		t.Errorf("mark TTL %v, want 1h", ttl)
	}
	otherMarkKey := tokencache.PurgeMarkKey(tokencache.RecordKey(tokencache.DefaultKeyPrefix, testApp("other", nil)) + "x")
	_ = mr.Set(otherMarkKey, raw)
	if _, err := store.GetPurgeMark(ctx, otherMarkKey); !errors.Is(err, tokencache.ErrNotFound) {
		t.Errorf("a mark copied to another key: %v, want ErrNotFound", err)
	}
	for _, writer := range []struct {
		name  string
		store *Store
	}{{"another key", stranger}, {"no key", plain}} {
		if err := writer.store.SetPurgeMark(ctx, markKey, purged, time.Hour); err != nil {
			t.Fatal(err)
		}
		if got, err := store.GetPurgeMark(ctx, markKey); !errors.Is(err, tokencache.ErrNotFound) {
			t.Errorf("a mark written with %s opened: %x, %v", writer.name, got, err)
		}
	}
	if got, err := plain.GetPurgeMark(ctx, markKey); err != nil || !samePurged(got) {
		t.Errorf("an unsealed store's GetPurgeMark() = %v, %v; want %v", got, err, purged)
	}

	_ = mr.Set(markKey, `{"purged":[{"sha256":"`+hex.EncodeToString(purged[0].Fingerprint[:])+`"}]}`+strings.Repeat(" ", tokencache.MaxPurgeMarkBytes))
	if _, err := plain.GetPurgeMark(ctx, markKey); !errors.Is(err, tokencache.ErrNotFound) || !errors.Is(err, tokencache.ErrTooLarge) {
		t.Errorf("an oversized mark: %v, want ErrNotFound and ErrTooLarge", err)
	}
	if err := plain.SetPurgeMark(ctx, markKey, make([]tokencache.PurgedToken, 20), time.Hour); !errors.Is(err, tokencache.ErrTooLarge) {
		t.Errorf("writing an oversized mark: %v, want ErrTooLarge", err)
	}
	if err := plain.SetPurgeMark(ctx, markKey, purged, 0); err == nil {
		t.Error("SetPurgeMark with no ttl succeeded")
	}
}

// TestBackoffsAreSealed: a backoff is sealed and bound to its key when
// records are, so that a Redis writer without the key cannot choose the
// message paused requests are answered with (nor pause them), and a reader
// of Redis does not read the fleet's failures. A backoff whose sealed form
// would be over tokencache.MaxBackoffBytes is written without its message.
func TestBackoffsAreSealed(t *testing.T) {
	mr := miniredis.RunT(t)
	store, stranger, plain := storeOn(t, mr, testKey(1)), storeOn(t, mr, testKey(2)), storeOn(t, mr)
	ctx := t.Context()
	key := tokencache.BackoffKey(tokencache.RecordKey(tokencache.DefaultKeyPrefix, testApp("graph-api", nil)))
	b := &tokencache.Backoff{Until: time.Now().Add(time.Minute).UTC().Truncate(time.Millisecond), Attempts: 2,
		Message: "AADSTS7000215: invalid client secret", CredentialID: "c"}
	if err := store.SetBackoff(ctx, key, b, time.Minute); err != nil {
		t.Fatal(err)
	}
	if got, err := store.GetBackoff(ctx, key); err != nil || got.Message != b.Message || !got.Until.Equal(b.Until) {
		t.Errorf("GetBackoff() = %+v, %v; want %+v", got, err, b)
	}
	raw, _ := mr.Get(key)
	if !isSealed([]byte(raw)) || strings.Contains(raw, "AADSTS") {
		t.Errorf("the backoff is not sealed: %.40q...", raw)
	}
	otherKey := tokencache.BackoffKey(tokencache.RecordKey(tokencache.DefaultKeyPrefix, testApp("other", nil)) + "x")
	_ = mr.Set(otherKey, raw)
	if _, err := store.GetBackoff(ctx, otherKey); !errors.Is(err, tokencache.ErrNotFound) {
		t.Errorf("a backoff copied to another key: %v, want ErrNotFound", err)
	}
	for _, writer := range []struct {
		name  string
		store *Store
	}{{"another key", stranger}, {"no key", plain}} {
		planted := *b
		planted.Message = "paste your secret at http://attacker.example"
		if err := writer.store.SetBackoff(ctx, key, &planted, time.Minute); err != nil {
			t.Fatal(err)
		}
		if got, err := store.GetBackoff(ctx, key); !errors.Is(err, tokencache.ErrNotFound) {
			t.Errorf("a backoff written with %s opened: %+v, %v", writer.name, got, err)
		}
	}
	if got, err := plain.GetBackoff(ctx, key); err != nil || got.Message == b.Message {
		t.Errorf("an unsealed store's GetBackoff() = %+v, %v; want the one it wrote", got, err)
	}
	// A 1 KiB message of escaped bytes, sealed, is over the bound: the
	// pause is shared without its text.
	long := *b
	long.Message = strings.Repeat("<", 1024)
	if err := store.SetBackoff(ctx, key, &long, time.Minute); err != nil {
		t.Fatal(err)
	}
	if got, err := store.GetBackoff(ctx, key); err != nil || got.Message != "" || !got.Until.Equal(b.Until) {
		t.Errorf("GetBackoff() of a backoff over the bound sealed = %+v, %v; want it without its message", got, err)
	}
}
