package tokencache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zapcore"
)

func TestRedisRecordFormat(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	graph := testApp("graph-api", f.Fetch)
	orders := Application{Name: "orders-api", CacheKey: testCacheKey,
		Scopes: []string{"api://orders/.default"}, Fetch: f.Fetch}
	c, _ := newTestCache(t, newMiniredisStore(t, mr), clock, graph, orders)

	for _, app := range []Application{graph, orders} {
		if _, err := c.Token(t.Context(), app.Name); err != nil {
			t.Fatal(err)
		}
	}
	if keys := mr.Keys(); len(keys) != 2 {
		t.Fatalf("redis holds %v, want one record per application and no lock", keys)
	}

	key := RecordKey(DefaultKeyPrefix, graph)
	raw, err := mr.Get(key)
	if err != nil {
		t.Fatalf("no record at %s: %v", key, err)
	}
	var fields map[string]any
	if err := json.Unmarshal([]byte(raw), &fields); err != nil {
		t.Fatal(err)
	}
	wantStrings := map[string]string{
		"id":              key,
		"applicationName": "graph-api",
		"accessToken":     "token-1",
		"scope":           testScope,
	}
	wantTimes := map[string]time.Time{
		"accessTokenExpiresAt": clock.Now().Add(time.Hour),
		"createdAt":            clock.Now(),
		"updatedAt":            clock.Now(),
	}
	if len(fields) != len(wantStrings)+len(wantTimes) {
		t.Errorf("record has fields %v, want exactly %d", fields, len(wantStrings)+len(wantTimes))
	}
	for name, want := range wantStrings {
		if fields[name] != want {
			t.Errorf("%s = %v, want %q", name, fields[name], want)
		}
	}
	for name, want := range wantTimes {
		s, _ := fields[name].(string)
		got, err := time.Parse(time.RFC3339, s)
		if err != nil || !got.Equal(want) {
			t.Errorf("%s = %q, want RFC 3339 %v (%v)", name, s, want, err)
		}
	}
	if ttl := mr.TTL(key); ttl != time.Hour {
		t.Errorf("record TTL = %v, want 1h (until the token expires)", ttl)
	}
}

func TestRedisRecordFromAnotherReplicaIsUsed(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f1, f2 := newFakeFetcher(clock), newFakeFetcher(clock)
	replica1, _ := newTestCache(t, newMiniredisStore(t, mr), clock, testApp("graph-api", f1.Fetch))
	replica2, _ := newTestCache(t, newMiniredisStore(t, mr), clock, testApp("graph", f2.Fetch))

	if _, err := replica1.Token(t.Context(), "graph-api"); err != nil {
		t.Fatal(err)
	}
	rec, err := replica2.Token(t.Context(), "graph")
	if err != nil {
		t.Fatal(err)
	}
	if rec.AccessToken != "token-1" || rec.ApplicationName != "graph" {
		t.Errorf("replica 2 got %q for %q, want replica 1's token-1 for graph", rec.AccessToken, rec.ApplicationName)
	}
	if f2.calls.Load() != 0 {
		t.Errorf("replica 2 fetched %d times, want 0", f2.calls.Load())
	}
}

// TestRedisReplicasFetchOnce runs 2 caches × 100 callers on one Redis. The
// fetch does not return before every caller has asked for a token and one
// replica has lost the lock, so all of them are waiting at once.
func TestRedisReplicasFetchOnce(t *testing.T) {
	const replicas, callers = 2, 100
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	asked := make(chan struct{}, replicas*callers)
	lockLost := make(chan struct{}, 1)
	var calls atomic.Int64
	fetch := func(context.Context) (Fetched, error) {
		calls.Add(1)
		for range replicas * callers {
			select {
			case <-asked:
			case <-ctx.Done():
				return Fetched{}, errors.New("not every caller asked for a token")
			}
		}
		select {
		case <-lockLost:
		case <-ctx.Done():
			return Fetched{}, errors.New("no replica lost the lock")
		}
		return Fetched{AccessToken: "shared-token", ExpiresAt: clock.Now().Add(time.Hour)}, nil
	}

	var caches []*testCache
	for r := range replicas {
		store := &spyStore{Store: newMiniredisStore(t, mr), onLockLost: func() {
			select {
			case lockLost <- struct{}{}:
			default:
			}
		}}
		c, _ := newTestCache(t, store, clock, testApp(fmt.Sprintf("graph-%d", r), fetch))
		c.hooks = &testHooks{beforeFlight: func(string) { asked <- struct{}{} }}
		caches = append(caches, c)
	}

	var wg sync.WaitGroup
	errs := make(chan error, replicas*callers)
	for r, c := range caches {
		for range callers {
			wg.Go(func() {
				rec, err := c.Token(ctx, fmt.Sprintf("graph-%d", r))
				if err == nil && rec.AccessToken != "shared-token" {
					err = fmt.Errorf("got token %q", rec.AccessToken)
				}
				if err != nil {
					errs <- err
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("fetch called %d times, want 1", n)
	}
}

func TestRedisLockReleasedOnlyByOwner(t *testing.T) {
	for _, tc := range []struct {
		name  string
		store func(t *testing.T) (Store, func(key string) bool)
	}{
		{"redis", func(t *testing.T) (Store, func(string) bool) {
			mr := miniredis.RunT(t)
			return newMiniredisStore(t, mr), mr.Exists
		}},
		{"memory", func(t *testing.T) (Store, func(string) bool) {
			s := NewMemoryStore()
			return s, func(key string) bool {
				s.mu.Lock()
				defer s.mu.Unlock()
				_, ok := s.locks[key]
				return ok
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store, exists := tc.store(t)
			ctx := t.Context()
			lockKey := LockKey(RecordKey(DefaultKeyPrefix, testApp("graph-api", nil)))

			owner, ok, err := store.TryLock(ctx, lockKey, time.Minute)
			if err != nil || !ok {
				t.Fatalf("TryLock() = %v, %v, want the lock", ok, err)
			}
			if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(owner) {
				t.Errorf("owner %q is not 16 random bytes in hex", owner)
			}
			if _, ok, err := store.TryLock(ctx, lockKey, time.Minute); err != nil || ok {
				t.Errorf("second TryLock() = %v, %v, want not obtained", ok, err)
			}
			if released, err := store.Unlock(ctx, lockKey, "someone-else"); err != nil || released {
				t.Errorf("Unlock(wrong owner) = %v, %v, want false", released, err)
			}
			if !exists(lockKey) {
				t.Fatal("the lock went away on a wrong owner's Unlock")
			}
			if released, err := store.Unlock(ctx, lockKey, owner); err != nil || !released {
				t.Errorf("Unlock(owner) = %v, %v, want true", released, err)
			}
			if exists(lockKey) {
				t.Error("the lock stayed after its owner's Unlock")
			}
		})
	}
}

func TestRedisDownFetchesOnItsOwnAndWarnsOnce(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	c, logs := newTestCache(t, newMiniredisStore(t, mr), clock, testApp("graph-api", f.Fetch))

	mr.SetError("ERR injected outage")
	const refreshes = 10
	for i := range refreshes {
		rec, err := c.Token(t.Context(), "graph-api")
		if err != nil {
			t.Fatalf("Token() with Redis down: %v", err)
		}
		if want := fmt.Sprintf("token-%d", i+1); rec.AccessToken != want {
			t.Errorf("AccessToken = %q, want %q", rec.AccessToken, want)
		}
		clock.Advance(time.Hour) // expire it: every call refreshes
	}
	if n := logs.FilterMessageSnippet("token store unavailable").Len(); n != 1 {
		t.Errorf("%d outage warnings for %d refreshes, want 1", n, refreshes)
	}

	mr.SetError("")
	if _, err := c.Token(t.Context(), "graph-api"); err != nil {
		t.Fatal(err)
	}
	if n := logs.FilterMessage("token store recovered").Len(); n != 1 {
		t.Errorf("%d recovery messages, want 1", n)
	}
	if !mr.Exists(RecordKey(DefaultKeyPrefix, testApp("graph-api", nil))) {
		t.Error("no record in Redis after it recovered")
	}
}

func TestRedisClosedFetchesOnItsOwn(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	c, logs := newTestCache(t, newMiniredisStore(t, mr), clock, testApp("graph-api", f.Fetch))
	mr.Close()
	rec, err := c.Token(t.Context(), "graph-api")
	if err != nil {
		t.Fatalf("Token() with Redis gone: %v", err)
	}
	if rec.AccessToken != "token-1" {
		t.Errorf("AccessToken = %q, want token-1", rec.AccessToken)
	}
	if n := logs.FilterMessageSnippet("token store unavailable").Len(); n != 1 {
		t.Errorf("%d outage warnings, want 1", n)
	}
}

func TestRedisCorruptRecordIsAMissAndOverwritten(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	app := testApp("graph-api", f.Fetch)
	c, logs := newTestCache(t, newMiniredisStore(t, mr), clock, app)
	key := RecordKey(DefaultKeyPrefix, app)
	for _, corrupt := range []string{`{"accessToken": "leaked-secret`, `{"accessTokenExpiresAt": 12}`} {
		t.Run(corrupt, func(t *testing.T) {
			before := f.calls.Load()
			if err := mr.Set(key, corrupt); err != nil {
				t.Fatal(err)
			}
			clock.Advance(2 * time.Hour) // L1 stale
			rec, err := c.Token(t.Context(), "graph-api")
			if err != nil {
				t.Fatal(err)
			}
			if f.calls.Load() != before+1 {
				t.Errorf("fetch not called for a corrupt record")
			}
			raw, _ := mr.Get(key)
			var stored Record
			if err := json.Unmarshal([]byte(raw), &stored); err != nil || stored.AccessToken != rec.AccessToken {
				t.Errorf("record not overwritten: %q (%v)", raw, err)
			}
			for _, entry := range logs.All() {
				if strings.Contains(fmt.Sprint(entry.ContextMap()), "leaked-secret") {
					t.Errorf("log %q quotes the corrupt value", entry.Message)
				}
			}
		})
	}
	// Each warned of: the replica wrote its own record in between.
	if n := logs.FilterMessageSnippet("does not decode").FilterLevelExact(zapcore.WarnLevel).Len(); n != 2 {
		t.Errorf("%d warnings of the 2 corrupt records", n)
	}
}

// TestRedisLockLoserFetchesAfterLongWait: a lock that is never released nor
// extended past its holder's possible fetch (3×LockTTL) does not block a
// loser for ever.
func TestRedisLockLoserFetchesAfterLongWait(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	app := testApp("graph-api", f.Fetch)
	key := RecordKey(DefaultKeyPrefix, app)
	// A replica's lock, as its holder sets it (for LockTTL), never released:
	// miniredis's clock stands still, so it does not expire either.
	const lockTTL = 30 * time.Millisecond
	if err := mr.Set(LockKey(key), "dead-replica"); err != nil {
		t.Fatal(err)
	}
	mr.SetTTL(LockKey(key), lockTTL)
	c, err := New(Options{Store: newMiniredisStore(t, mr), Clock: realTimers{clock},
		LockTTL: lockTTL, PollInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	h, err := c.Register(app)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := h.Token(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if rec.AccessToken != "token-1" || !mr.Exists(key) {
		t.Errorf("got %q, record written %v; want own fetch token-1, written", rec.AccessToken, mr.Exists(key))
	}
	if got, _ := mr.Get(LockKey(key)); got != "dead-replica" {
		t.Errorf("lock = %q, want the other replica's lock untouched", got)
	}
}

func TestRedisLockLoserTakesOverFreedLock(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	app := testApp("graph-api", f.Fetch)
	lockKey := LockKey(RecordKey(DefaultKeyPrefix, app))
	// A winner whose fetch failed releases its lock without a record: the
	// loser must take over rather than wait out WaitTimeout.
	if err := mr.Set(lockKey, "failing-replica"); err != nil {
		t.Fatal(err)
	}
	store := &spyStore{Store: newMiniredisStore(t, mr), onLockLost: func() { mr.Del(lockKey) }}
	c, err := New(Options{Store: store, Clock: realTimers{clock}, WaitTimeout: time.Hour, PollInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	h, err := c.Register(app)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := h.Token(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if rec.AccessToken != "token-1" || mr.Exists(lockKey) {
		t.Errorf("got %q, lock left %v; want token-1 and the lock released", rec.AccessToken, mr.Exists(lockKey))
	}
}

func TestNewRedisStoreUsesURL(t *testing.T) {
	mr := miniredis.RunT(t)
	mr.RequireUserAuth("app", "pw")
	store, err := newRedisStore(redisOptions{URL: "redis://app:pw@" + mr.Addr() + "/0", KeyPrefix: "other:"})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if err := store.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, ok := store.Client().(*redis.Client); !ok {
		t.Errorf("client is %T, want a standalone *redis.Client for one address", store.Client())
	}
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	app := testApp("graph-api", f.Fetch)
	c, _ := newTestCache(t, store, clock, app)
	rec, err := c.Token(t.Context(), "graph-api")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(rec.ID, "other:{") || !mr.Exists(RecordKey("other:", app)) {
		t.Errorf("record ID %q, want it under the store's prefix other:", rec.ID)
	}
}

// TestRedisHungIsBoundedByOpTimeout: a Redis that accepts connections and
// never answers delays a refresh by about OpTimeout per call, no more.
func TestRedisHungIsBoundedByOpTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn) // held open, never answered
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})

	store, err := newRedisStore(redisOptions{URL: "redis://" + ln.Addr().String(), OpTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	c, logs := newTestCache(t, store, clock, testApp("graph-api", f.Fetch))

	start := time.Now()
	rec, err := c.Token(t.Context(), "graph-api")
	if err != nil {
		t.Fatalf("Token() with Redis hung: %v", err)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("Token() took %v with OpTimeout 50ms", elapsed)
	}
	if rec.AccessToken != "token-1" {
		t.Errorf("AccessToken = %q, want token-1", rec.AccessToken)
	}
	if n := logs.FilterMessageSnippet("token store unavailable").Len(); n != 1 {
		t.Errorf("%d outage warnings, want 1", n)
	}
}

// A lock a Redis writer planted with no expiry does not hold a replica
// with no token: it is taken over at once, where it used to cost 3×LockTTL
// (here more than WaitTimeout, so the first Token failed).
func TestALockPlantedWithNoExpiryDoesNotHoldTheFirstToken(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	c, err := New(Options{Store: newEncryptedStore(t, mr, testKey(1)), Clock: realTimers{clock},
		LockTTL: time.Minute, WaitTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	h, err := c.Register(testApp("graph-api", f.Fetch))
	if err != nil {
		t.Fatal(err)
	}
	if err := mr.Set(LockKey(h.Key()), "held-by-the-writer"); err != nil {
		t.Fatal(err)
	}
	rec, err := h.Token(t.Context())
	if err != nil {
		t.Fatalf("Token with a planted lock: %v; want token-1 at once", err)
	}
	if rec.AccessToken != "token-1" {
		t.Errorf("Token with a planted lock = %q, want token-1", rec.AccessToken)
	}
	if mr.Exists(LockKey(h.Key())) {
		t.Error("the lock taken over was not released after the fetch")
	}
}

// A record that does not decode is warned of once, until one is trusted or
// written: a Redis writer without the key who holds the lock and announces
// on the key's channel wakes a waiting replica to read it again each time,
// and the repeats go to debug (they were one warning per announcement).
func TestAnnouncedUndecodableRecordsAreWarnedOfOnce(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	c, _, logs := newClockCache(t, newEncryptedStore(t, mr, testKey(1)), clock, Options{WaitTimeout: time.Minute},
		testApp("graph-api", f.Fetch))
	key := c.handles["graph-api"].Key()
	if err := mr.Set(LockKey(key), "held-by-the-writer"); err != nil {
		t.Fatal(err)
	}
	mr.SetTTL(LockKey(key), DefaultLockTTL)
	if err := mr.Set(key, "v1.00000000.not-a-sealed-record"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := c.Token(ctx, "graph-api")
		done <- err
	}()
	reads := func() int { return logs.FilterMessage("discarding a token record that does not decode").Len() }
	eventually(t, "the first read", func() bool { return reads() == 1 })
	const announcements = 5
	for i := range announcements {
		mr.Publish(UpdateChannel(key), "writer")
		eventually(t, "a read after the announcement", func() bool { return reads() == i+2 })
	}
	cancel()
	receive(t, done, "the Token call's end")
	if n := logs.FilterMessage("discarding a token record that does not decode").FilterLevelExact(zapcore.WarnLevel).Len(); n != 1 {
		t.Errorf("%d warnings for %d reads of the record, want 1 (the rest at debug)", n, reads())
	}
}
