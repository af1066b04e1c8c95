package tokencache

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// replySizes is a go-redis hook that keeps the longest string reply read.
type replySizes struct{ longest atomic.Int64 }

func (r *replySizes) DialHook(next redis.DialHook) redis.DialHook { return next }
func (r *replySizes) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (r *replySizes) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		var n int
		switch c := cmd.(type) {
		case *redis.Cmd:
			if s, ok := c.Val().(string); ok {
				n = len(s)
			}
		case *redis.StringCmd:
			n = len(c.Val())
		}
		for {
			old := r.longest.Load()
			if int64(n) <= old || r.longest.CompareAndSwap(old, int64(n)) {
				break
			}
		}
		return err
	}
}

// TestOversizedRecordIsRefusedUnread: a record over MaxRecordBytes planted
// in Redis (a valid one, with a token that would otherwise be used) is a
// miss, logged, and its value never comes back from Redis.
func TestOversizedRecordIsRefusedUnread(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	store := newMiniredisStore(t, mr)
	sizes := &replySizes{}
	store.Client().AddHook(sizes)
	f := newFakeFetcher(clock)
	app := testApp("graph-api", f.Fetch)
	c, _, logs := newClockCache(t, store, clock, Options{}, app)
	key := RecordKey(DefaultKeyPrefix, app)
	planted := Record{ID: key, ApplicationName: "graph-api", AccessToken: "planted-" + strings.Repeat("x", MaxRecordBytes),
		AccessTokenExpiresAt: clock.Now().Add(time.Hour), Scope: testScope, CreatedAt: clock.Now(), UpdatedAt: clock.Now()}
	raw, _ := json.Marshal(planted)
	if err := mr.Set(key, string(raw)); err != nil {
		t.Fatal(err)
	}
	rec, err := c.Token(t.Context(), "graph-api")
	if err != nil || rec.AccessToken != "token-1" || f.calls.Load() != 1 {
		t.Fatalf("Token() = %.20q, %v after %d fetches, want its own token-1", rec.AccessToken, err, f.calls.Load())
	}
	if n := sizes.longest.Load(); n > MaxRecordBytes+1 {
		t.Errorf("a %d-byte reply was read from Redis, over MaxRecordBytes+1", n)
	}
	warned := logs.FilterMessageSnippet("discarding a token record larger than any replica writes").All()
	if len(warned) == 0 || !strings.Contains(warned[0].ContextMap()["error"].(string), "over the 65536-byte limit") {
		t.Errorf("the oversized record was not logged as such: %v", logs.All())
	}
}

// TestRecordOverTheLimitIsNotShared: a token too large for other replicas
// to read is used by the replica that fetched it, and not written.
func TestRecordOverTheLimitIsNotShared(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	big := strings.Repeat("t", MaxRecordBytes)
	fetch := func(context.Context) (Fetched, error) {
		return Fetched{AccessToken: big, ExpiresAt: clock.Now().Add(time.Hour)}, nil
	}
	app := testApp("graph-api", fetch)
	c, _, logs := newClockCache(t, newMiniredisStore(t, mr), clock, Options{}, app)
	rec, err := c.Token(t.Context(), "graph-api")
	if err != nil || rec.AccessToken != big {
		t.Fatalf("Token() = %v, want the fetched token", err)
	}
	if mr.Exists(RecordKey(DefaultKeyPrefix, app)) {
		t.Error("a record over MaxRecordBytes was written to the store")
	}
	if logs.FilterMessageSnippet("not sharing a token record larger").Len() != 1 {
		t.Errorf("not logged: %v", logs.All())
	}
	if !c.StoreAvailable() {
		t.Error("the store is reported unavailable")
	}
}

// plantBackoff writes raw as the backoff of app's key.
func plantBackoff(t *testing.T, mr *miniredis.Miniredis, app Application, b map[string]any) {
	t.Helper()
	raw, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := mr.Set(BackoffKey(RecordKey(DefaultKeyPrefix, app)), string(raw)); err != nil {
		t.Fatal(err)
	}
}

// TestOversizedBackoffIsIgnored: a backoff over MaxBackoffBytes planted in
// Redis pauses nothing and is logged.
func TestOversizedBackoffIsIgnored(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	app := testApp("graph-api", f.Fetch)
	c, _, logs := newClockCache(t, newMiniredisStore(t, mr), clock, Options{}, app)
	plantBackoff(t, mr, app, map[string]any{"until": clock.Now().Add(30 * time.Second), "attempts": 1,
		"message": strings.Repeat("m", MaxBackoffBytes)})
	rec, err := c.Token(t.Context(), "graph-api")
	if err != nil || rec.AccessToken != "token-1" {
		t.Fatalf("Token() failed (%d-byte error), want a token: the oversized backoff is not obeyed", len(errText(err)))
	}
	if logs.FilterMessageSnippet("shared backoff larger than any replica writes").Len() != 1 {
		t.Errorf("not logged: %v", logs.All())
	}
}

// TestStoredBackoffMessageIsCutAsWritten: a backoff within the bound but
// with a message longer than a replica writes is obeyed, and its message
// is cut to maxBackoffMessage in what callers get.
func TestStoredBackoffMessageIsCutAsWritten(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	app := testApp("graph-api", f.Fetch)
	c, _, _ := newClockCache(t, newMiniredisStore(t, mr), clock, Options{}, app)
	plantBackoff(t, mr, app, map[string]any{"until": clock.Now().Add(30 * time.Second), "attempts": 1,
		"message": strings.Repeat("m", 3*maxBackoffMessage)})
	_, err := c.Token(t.Context(), "graph-api")
	var coded *Error
	if !asError(err, &coded) || status(coded) != http.StatusServiceUnavailable || f.calls.Load() != 0 {
		t.Fatalf("Token() = %v after %d fetches, want 503 and no fetch", err, f.calls.Load())
	}
	if want := strings.Repeat("m", maxBackoffMessage) + "; token requests paused for 30s"; coded.Message != want {
		t.Errorf("message of %d bytes, want the stored one cut to %d bytes and the pause", len(coded.Message), maxBackoffMessage)
	}
}

// errText is err's text, "" for nil.
func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestAWrongTypeRecordIsAMissNotAnOutage: a record key a Redis writer made
// a list answers WRONGTYPE; that is a record that does not decode (a miss,
// logged), not an outage: the store stays available and no outage is
// logged, so alternating announcements cannot flap it.
func TestAWrongTypeRecordIsAMissNotAnOutage(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	app := testApp("graph-api", f.Fetch)
	c, _, logs := newClockCache(t, newMiniredisStore(t, mr), clock, Options{}, app)
	key := RecordKey(DefaultKeyPrefix, app)
	if _, err := mr.Lpush(key, "planted"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.store.Get(t.Context(), key); !errors.Is(err, ErrNotFound) || err == ErrNotFound {
		t.Fatalf("reading a list: %v, want a wrapped ErrNotFound", err)
	}
	rec, err := c.Token(t.Context(), "graph-api")
	if err != nil || rec.AccessToken != "token-1" || f.calls.Load() != 1 {
		t.Fatalf("Token() = %q, %v after %d fetches, want its own token-1", rec.AccessToken, err, f.calls.Load())
	}
	if !c.StoreAvailable() || logs.FilterMessageSnippet("token store unavailable").Len() != 0 {
		t.Errorf("a wrong-type record was taken for an outage: available %v, %v", c.StoreAvailable(), logs.All())
	}
	if logs.FilterMessageSnippet("discarding a token record").Len() == 0 {
		t.Errorf("the wrong-type record was not logged as discarded: %v", logs.All())
	}
}
