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

// TestPurgeMarksAreSealedAndBounded: a purge mark names tokens by their
// fingerprints, sealed and bound to its key when records are: only a
// holder of the key writes one that opens there. One over
// tokencache.MaxPurgeMarkBytes is neither read nor written.
func TestPurgeMarksAreSealedAndBounded(t *testing.T) {
	mr := miniredis.RunT(t)
	sealed := func(keys ...[]byte) *Store {
		client := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
		s, err := newStore(client, Options{EncryptionKeys: keys})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	store, stranger, plain := sealed(testKey(1)), sealed(testKey(2)), sealed()
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
