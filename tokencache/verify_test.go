package tokencache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"go.uber.org/zap/zaptest/observer"
)

// verifyByPrefix stands for a caller's VerifyStored: "ours-" tokens belong
// to the application, "theirs-" tokens to another tenant, anything else
// cannot be told.
func verifyByPrefix(rec Record) error {
	switch {
	case strings.HasPrefix(rec.AccessToken, "ours-"):
		return nil
	case strings.HasPrefix(rec.AccessToken, "theirs-"):
		return errors.New("token claim tid is another tenant")
	default:
		return fmt.Errorf("%w: the token is not a JWT", ErrUnverifiable)
	}
}

// prefixFetcher hands out prefix+"N" valid for an hour on clock.
type prefixFetcher struct {
	clock  *fakeClock
	prefix string
	calls  atomic.Int64
}

func (f *prefixFetcher) Fetch(context.Context) (Fetched, error) {
	n := f.calls.Add(1)
	return Fetched{AccessToken: fmt.Sprintf("%s%d", f.prefix, n), ExpiresAt: f.clock.Now().Add(time.Hour)}, nil
}

// verifiedApp is testApp with VerifyStored.
func verifiedApp(fetch FetchFunc) Application {
	app := testApp("graph-api", fetch)
	app.VerifyStored = verifyByPrefix
	return app
}

// plant writes a record holding token under the application's key, as
// anyone who can write to Redis can.
func plant(t *testing.T, mr *miniredis.Miniredis, clock *fakeClock, token string) string {
	t.Helper()
	key := RecordKey(DefaultKeyPrefix, testApp("graph-api", nil))
	raw, err := json.Marshal(Record{ID: key, ApplicationName: "graph-api", AccessToken: token,
		AccessTokenExpiresAt: clock.Now().Add(time.Hour), Scope: testScope, CreatedAt: clock.Now(), UpdatedAt: clock.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if err := mr.Set(key, string(raw)); err != nil {
		t.Fatal(err)
	}
	return key
}

// storedToken returns the token of the record under key in mr ("" if none).
func storedToken(t *testing.T, mr *miniredis.Miniredis, key string) string {
	t.Helper()
	raw, err := mr.Get(key)
	if err != nil {
		return ""
	}
	var rec Record
	if err := json.Unmarshal([]byte(raw), &rec); err != nil {
		t.Fatalf("record %s: %v", key, err)
	}
	return rec.AccessToken
}

// assertNotLogged fails when any log line or field holds secret.
func assertNotLogged(t *testing.T, logs *observer.ObservedLogs, secret string) {
	t.Helper()
	for _, entry := range logs.All() {
		if strings.Contains(entry.Message, secret) || strings.Contains(fmt.Sprint(entry.ContextMap()), secret) {
			t.Errorf("log %q holds the token", entry.Message)
		}
	}
}

func TestPlantedRecordOfAnotherIdentityIsAMiss(t *testing.T) {
	const planted = "theirs-planted-token-Do-Not-Log"
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	key := plant(t, mr, clock, planted)

	f := &prefixFetcher{clock: clock, prefix: "ours-"}
	c, logs := newTestCache(t, newMiniredisStore(t, mr), clock, verifiedApp(f.Fetch))
	rec, err := c.Token(t.Context(), "graph-api")
	if err != nil {
		t.Fatal(err)
	}
	if rec.AccessToken != "ours-1" || f.calls.Load() != 1 {
		t.Fatalf("Token = %q after %d fetches, want the replica's own ours-1 after 1", rec.AccessToken, f.calls.Load())
	}
	warnings := logs.FilterMessage("token record does not match its identity; possible tampering").All()
	if len(warnings) != 1 {
		t.Fatalf("%d tampering warnings, want 1", len(warnings))
	}
	if fields := warnings[0].ContextMap(); fields["record_key"] != key || fields["application"] != "graph-api" ||
		!strings.Contains(fmt.Sprint(fields["error"]), "tid") {
		t.Errorf("tampering warning fields %v, want the application, the record key and the claim", fields)
	}
	assertNotLogged(t, logs, planted)
	if got := storedToken(t, mr, key); got != "ours-1" {
		t.Errorf("store holds %q, want the planted record overwritten with ours-1", got)
	}

	// An application without VerifyStored takes what it reads, as before.
	plant(t, mr, clock, planted)
	unchecked, _ := newTestCache(t, newMiniredisStore(t, mr), clock, testApp("graph-api", f.Fetch))
	if rec, err := unchecked.Token(t.Context(), "graph-api"); err != nil || rec.AccessToken != planted {
		t.Errorf("without VerifyStored: %v, want the stored record", err)
	}
}

func TestPlantedRecordOfAnotherIdentityIsAMissEvenFromAnEncryptedStore(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	// A holder of the key wrote another identity's token (or a config
	// mix-up did): authentication does not make it this identity's.
	store := newEncryptedStore(t, mr, testKey(1))
	key := RecordKey(DefaultKeyPrefix, testApp("graph-api", nil))
	if err := store.Set(t.Context(), key, &Record{ID: key, AccessToken: "theirs-sealed",
		AccessTokenExpiresAt: clock.Now().Add(time.Hour)}, time.Hour); err != nil {
		t.Fatal(err)
	}
	f := &prefixFetcher{clock: clock, prefix: "ours-"}
	c, logs := newTestCache(t, newEncryptedStore(t, mr, testKey(1)), clock, verifiedApp(f.Fetch))
	if rec, err := c.Token(t.Context(), "graph-api"); err != nil || rec.AccessToken != "ours-1" {
		t.Fatalf("Token = %q, %v; want ours-1", rec.AccessToken, err)
	}
	if n := logs.FilterMessage("token record does not match its identity; possible tampering").Len(); n != 1 {
		t.Errorf("%d tampering warnings, want 1", n)
	}
}

func TestUnverifiableRecordIsTrustedOnlyFromAnAuthenticatingStore(t *testing.T) {
	t.Run("plaintext redis", func(t *testing.T) {
		const planted = "opaque-planted-token-Do-Not-Log"
		mr := miniredis.RunT(t)
		clock := newFakeClock()
		plant(t, mr, clock, planted)
		f := &prefixFetcher{clock: clock, prefix: "ours-"}
		c, logs := newTestCache(t, newMiniredisStore(t, mr), clock, verifiedApp(f.Fetch))
		if rec, err := c.Token(t.Context(), "graph-api"); err != nil || rec.AccessToken != "ours-1" {
			t.Fatalf("Token = %q, %v; want the replica's own ours-1", rec.AccessToken, err)
		}
		if n := logs.FilterMessageSnippet("cannot be verified against its identity").Len(); n != 1 {
			t.Errorf("%d lines about the unverifiable record, want 1", n)
		}
		assertNotLogged(t, logs, planted)
	})
	t.Run("encrypted redis", func(t *testing.T) {
		mr := miniredis.RunT(t)
		clock := newFakeClock()
		// Replicas whose tokens are opaque share them through a store that
		// authenticates its records.
		first := &prefixFetcher{clock: clock, prefix: "opaque-"}
		a, logsA := newTestCache(t, newEncryptedStore(t, mr, testKey(1)), clock, verifiedApp(first.Fetch))
		tokA, err := a.Token(t.Context(), "graph-api")
		if err != nil {
			t.Fatal(err)
		}
		second := &prefixFetcher{clock: clock, prefix: "opaque-b-"}
		b, logsB := newTestCache(t, newEncryptedStore(t, mr, testKey(1)), clock, verifiedApp(second.Fetch))
		tokB, err := b.Token(t.Context(), "graph-api")
		if err != nil {
			t.Fatal(err)
		}
		if tokB.AccessToken != tokA.AccessToken || second.calls.Load() != 0 {
			t.Errorf("second replica: %q after %d fetches, want the first's token and none", tokB.AccessToken, second.calls.Load())
		}
		if n := logsA.FilterMessageSnippet("verif").Len() + logsB.FilterMessageSnippet("verif").Len(); n != 0 {
			t.Errorf("%d log lines about verification, want none", n)
		}
	})
	t.Run("memory", func(t *testing.T) {
		if !NewMemoryStore().Authenticates() {
			t.Error("MemoryStore does not authenticate: its records never leave the process")
		}
		if newMiniredisStore(t, miniredis.RunT(t)).Authenticates() {
			t.Error("a RedisStore without encryption keys authenticates")
		}
	})
}

func TestOwnUnverifiableTokenIsNotSharedThroughAnUnauthenticatedStore(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	key := RecordKey(DefaultKeyPrefix, testApp("graph-api", nil))
	replica := func(prefix string) (*testCache, *prefixFetcher, *spyStore, *observer.ObservedLogs) {
		f := &prefixFetcher{clock: clock, prefix: prefix}
		store := &spyStore{Store: newMiniredisStore(t, mr)}
		c, logs := newTestCache(t, store, clock, verifiedApp(f.Fetch))
		return c, f, store, logs
	}
	const cannotShare = "other replicas could not verify this replica's tokens, and the token store does not authenticate records; " +
		"fetching tokens for it without sharing them through the token store (set encryption_key to share them)"

	a, fa, storeA, logsA := replica("opaque-a-")
	if rec, err := a.Token(t.Context(), "graph-api"); err != nil || rec.AccessToken != "opaque-a-1" {
		t.Fatalf("Token = %q, %v", rec.AccessToken, err)
	}
	if mr.Exists(key) {
		t.Error("an unverifiable token was written to a store that does not authenticate records")
	}
	b, fb, _, logsB := replica("opaque-b-")
	if rec, err := b.Token(t.Context(), "graph-api"); err != nil || rec.AccessToken != "opaque-b-1" || fb.calls.Load() != 1 {
		t.Fatalf("second replica: %q, %v after %d fetches, want its own token", rec.AccessToken, err, fb.calls.Load())
	}

	// From then on the replica fetches alone, without reading the store, and
	// says why only once.
	calls := storeA.calls.Load()
	plant(t, mr, clock, "opaque-planted")
	clock.Advance(time.Hour)
	if rec, err := a.Token(t.Context(), "graph-api"); err != nil || rec.AccessToken != "opaque-a-2" {
		t.Fatalf("after expiry: %q, %v; want the replica's own second token", rec.AccessToken, err)
	}
	if got := storeA.calls.Load(); got != calls {
		t.Errorf("the store was called %d times after the key became unshared, want 0", got-calls)
	}
	for name, logs := range map[string]*observer.ObservedLogs{"first": logsA, "second": logsB} {
		if n := logs.FilterMessage(cannotShare).Len(); n != 1 {
			t.Errorf("%s replica said %d times why it cannot share, want once", name, n)
		}
	}
	if fa.calls.Load() != 2 {
		t.Errorf("first replica fetched %d times, want 2", fa.calls.Load())
	}
}

func TestUnsharedKeyKeepsItsBackoff(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := &scriptedFetcher{clock: clock, script: []fetchStep{{}, {err: &classifiedError{permanent: true}}}}
	c, _ := newTestCache(t, newMiniredisStore(t, mr), clock, verifiedApp(f.Fetch)) // "token-N": unverifiable
	if _, err := c.Token(t.Context(), "graph-api"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	for range 3 {
		var coded *Error
		if _, err := c.Token(t.Context(), "graph-api"); !errors.As(err, &coded) || status(coded) != 502 {
			t.Fatalf("Token = %v, want a 502 *Error", err)
		}
	}
	if n := f.calls.Load(); n != 2 {
		t.Errorf("%d fetches, want 2: the failure backs the unshared key off in process", n)
	}
	if mr.Exists(BackoffKey(RecordKey(DefaultKeyPrefix, testApp("graph-api", nil)))) {
		t.Error("an unshared key's backoff went to the store")
	}
}

func TestOwnTokenOfAnotherIdentityIsNotShared(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	// The token endpoint hands this replica tokens that do not match its
	// configured identity (a configuration mistake): every replica would
	// take its record for tampering, so it keeps them to itself.
	f := &prefixFetcher{clock: clock, prefix: "theirs-"}
	c, logs := newTestCache(t, newEncryptedStore(t, mr, testKey(1)), clock, verifiedApp(f.Fetch))
	if _, err := c.Token(t.Context(), "graph-api"); err != nil {
		t.Fatal(err)
	}
	if mr.Exists(RecordKey(DefaultKeyPrefix, testApp("graph-api", nil))) {
		t.Error("a token that does not match its identity was shared")
	}
	if n := logs.FilterMessageSnippet("own token does not match its configured identity").Len(); n != 1 {
		t.Errorf("%d warnings about the replica's own token, want 1", n)
	}
}
