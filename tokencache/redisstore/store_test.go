package redisstore

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/caddy-entra/caddy-entra/tokencache"
)

// maxBackoffMessage is the longest message a replica writes in a backoff
// (tokencache cuts it to 1 KiB).
const maxBackoffMessage = 1024

func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, encryptionKeySize) }

func testApp(name string, fetch tokencache.FetchFunc) tokencache.Application {
	return tokencache.Application{Name: name, CacheKey: "https://login.example/tenant-1/oauth2/v2.0/token\ntenant-1\nclient-1",
		Scopes: []string{"https://graph.microsoft.com/.default"}, Fetch: fetch}
}

// newMiniredisStore returns a Store on mr.
func newMiniredisStore(t testing.TB, mr *miniredis.Miniredis) *Store {
	t.Helper()
	client := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	store, err := newStore(client, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	return store
}

func receive[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > time.Second {
			t.Fatalf("%s did not happen within 1s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestNewRedisStoreNeverLeaksPassword(t *testing.T) {
	const password = "s3cr3t-P4ss"
	for _, rawURL := range []string{
		"redis://user:" + password + "@localhost:notaport/0",
		"redis://user:" + password + "@localhost:6379/notadb",
		"redis://user:" + password + "@localhost:6379/0?pool_size=many",
		"http://user:" + password + "@localhost:6379/0",
		"redis://user:" + password + "@local host:6379/0",
		"redis://:" + password + "%zz@localhost:6379/0",
	} {
		if _, err := New(Options{URL: rawURL}); err == nil {
			t.Errorf("New(%q) = nil error, want one", rawURL)
		} else if strings.Contains(err.Error(), password) || !strings.HasPrefix(err.Error(), "tokencache: ") {
			t.Errorf("error %q leaks the password or lacks the prefix", err)
		}
	}

	// Unreachable Redis does not fail construction; Ping says so, without the password.
	store, err := New(Options{URL: "redis://user:" + password + "@127.0.0.1:1/0", OpTimeout: time.Second})
	if err != nil {
		t.Fatalf("New(unreachable) = %v, want no error", err)
	}
	defer store.Close()
	if store.KeyPrefix() != tokencache.DefaultKeyPrefix {
		t.Errorf("KeyPrefix() = %q, want the default %q", store.KeyPrefix(), tokencache.DefaultKeyPrefix)
	}
	err = store.Ping(t.Context())
	if err == nil {
		t.Fatal("Ping(unreachable) = nil")
	}
	if strings.Contains(err.Error(), password) {
		t.Errorf("Ping error %q leaks the password", err)
	}
}

func TestRedisStoreGetMissAndTTL(t *testing.T) {
	mr := miniredis.RunT(t)
	store := newMiniredisStore(t, mr)
	ctx := t.Context()
	if _, err := store.Get(ctx, "entra:{none}:token"); err != tokencache.ErrNotFound {
		t.Errorf("Get(missing) error = %v, want tokencache.ErrNotFound", err)
	}
	rec := &tokencache.Record{ID: "entra:{x}:token", AccessToken: "t"}
	if err := store.Set(ctx, rec.ID, rec, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := store.Set(ctx, rec.ID, rec, 0); err == nil {
		t.Error("Set() with ttl 0 = nil error, want one (the record would never expire)")
	}
	mr.FastForward(time.Minute)
	if _, err := store.Get(ctx, rec.ID); err != tokencache.ErrNotFound {
		t.Errorf("Get(expired) error = %v, want tokencache.ErrNotFound", err)
	}
}

func TestRedisLockExpires(t *testing.T) {
	mr := miniredis.RunT(t)
	store := newMiniredisStore(t, mr)
	ctx := t.Context()
	first, _, err := store.TryLock(ctx, "entra:{x}:lock", 15*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	mr.FastForward(15 * time.Second)
	second, ok, err := store.TryLock(ctx, "entra:{x}:lock", 15*time.Second)
	if err != nil || !ok {
		t.Fatalf("TryLock() after expiry = %v, %v, want the lock", ok, err)
	}
	if released, _ := store.Unlock(ctx, "entra:{x}:lock", first); released {
		t.Error("the expired holder released the next holder's lock")
	}
	if got, _ := mr.Get("entra:{x}:lock"); got != second {
		t.Errorf("lock holds %q, want the second owner", got)
	}
}

func TestRedisUnlockScriptReloaded(t *testing.T) {
	mr := miniredis.RunT(t)
	store := newMiniredisStore(t, mr)
	ctx := t.Context()
	owner, _, err := store.TryLock(ctx, "entra:{x}:lock", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	mr.FlushAll() // drops the lock
	if released, err := store.Unlock(ctx, "entra:{x}:lock", owner); err != nil || released {
		t.Errorf("Unlock(gone lock) = %v, %v, want false, nil", released, err)
	}
	if err := store.Client().ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	owner, _, _ = store.TryLock(ctx, "entra:{x}:lock", time.Minute)
	if released, err := store.Unlock(ctx, "entra:{x}:lock", owner); err != nil || !released {
		t.Errorf("Unlock() after SCRIPT FLUSH = %v, %v, want the EVAL fallback to release", released, err)
	}
}

func TestNewRedisStoreChecksEncryptionKeys(t *testing.T) {
	short := bytes.Repeat([]byte("S"), 31)
	_, err := New(Options{URL: "redis://127.0.0.1:1", EncryptionKeys: [][]byte{testKey(1), short}})
	if err == nil || !strings.Contains(err.Error(), "encryption key 1") || strings.Contains(err.Error(), "SSSS") ||
		!strings.HasPrefix(err.Error(), "tokencache: ") {
		t.Errorf("New(31-byte key) error = %v, want one naming key 1 and not its bytes", err)
	}
}

func TestParseEncryptionKey(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		got, err := ParseEncryptionKey(" " + enc.EncodeToString(key) + "\n")
		if err != nil || !bytes.Equal(got, key) {
			t.Errorf("ParseEncryptionKey(%v) = %q, %v", enc, got, err)
		}
	}
	for _, bad := range []string{base64.StdEncoding.EncodeToString(key[:16]), "not*base64*secret-material"} {
		_, err := ParseEncryptionKey(bad)
		if err == nil || strings.Contains(err.Error(), bad) || strings.Contains(err.Error(), "secret-material") {
			t.Errorf("ParseEncryptionKey(bad) error = %v, want one not quoting the input", err)
		}
	}
}

// TestRedisStoreSharesOneSubscription: many watchers, one PSUBSCRIBE.
func TestRedisStoreSharesOneSubscription(t *testing.T) {
	mr := miniredis.RunT(t)
	store := newMiniredisStore(t, mr)
	ctx := t.Context()
	channels := []string{
		tokencache.UpdateChannel(tokencache.RecordKey(tokencache.DefaultKeyPrefix, testApp("graph-api", nil))),
		tokencache.UpdateChannel(tokencache.RecordKey(tokencache.DefaultKeyPrefix, tokencache.Application{CacheKey: "other", Scopes: []string{"s"}})),
	}
	// Start the shared subscription: its confirmation wakes no watcher
	// (that would make every key read the store at once).
	warmup, cancelWarmup := store.Watch(ctx, "", channels[0])
	if len(warmup) != 0 {
		t.Error("the subscription's confirmation woke a watcher")
	}
	cancelWarmup()

	var cancels []func()
	var chans []<-chan *tokencache.Record
	for i := range 20 {
		ch, cancel := store.Watch(ctx, "", channels[i%2])
		cancels = append(cancels, cancel)
		chans = append(chans, ch)
	}
	if n := mr.PubSubNumPat(); n != 1 {
		t.Errorf("%d pattern subscriptions for 20 watchers, want 1", n)
	}
	// The store's own announcement wakes none (its cache knows); another
	// process's wakes those on its channel. Announcements arrive in order.
	channel, otherProcess := channels[0], newMiniredisStore(t, mr)
	if err := store.Publish(ctx, "", channel, nil); err != nil {
		t.Fatal(err)
	}
	if err := otherProcess.Publish(ctx, "", channels[1], nil); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(chans); i += 2 {
		receive(t, chans[i], "the announcement on the other channel")
	}
	for i := 0; i < len(chans); i += 2 {
		if len(chans[i]) != 0 {
			t.Errorf("watcher %d was woken by the store's own announcement", i)
		}
	}
	if err := otherProcess.Publish(ctx, "", channel, nil); err != nil {
		t.Fatal(err)
	}
	for i, ch := range chans {
		if i%2 == 0 {
			receive(t, ch, "the announcement")
		}
	}
	for i, ch := range chans {
		if i%2 == 1 && len(ch) != 0 {
			t.Errorf("watcher %d on another channel was woken", i)
		}
	}
	for _, cancel := range cancels {
		cancel()
	}
	if n := store.watchers.count(channel); n != 0 {
		t.Errorf("%d watchers left after cancel, want 0", n)
	}
}

// TestWatchStopsWithTheLastHandle: a key's lasting subscription lives as
// long as its handles.
func TestWatchStopsWithTheLastHandle(t *testing.T) {
	mr := miniredis.RunT(t)
	store := newMiniredisStore(t, mr)
	c, err := tokencache.New(tokencache.Options{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	h, err := c.Register(testApp("graph-api", func(context.Context) (tokencache.Fetched, error) {
		return tokencache.Fetched{}, errors.New("not called")
	}))
	if err != nil {
		t.Fatal(err)
	}
	channel := tokencache.UpdateChannel(h.Key())
	eventually(t, "the lasting subscription", func() bool { return store.watchers.count(channel) == 1 })
	h.Release()
	eventually(t, "the subscription ending", func() bool { return store.watchers.count(channel) == 0 })
}

// TestBackoffOverTheLimitIsWrittenWithoutItsMessage: a replica whose
// backoff would be over MaxBackoffBytes shares the pause without the text.
func TestBackoffOverTheLimitIsWrittenWithoutItsMessage(t *testing.T) {
	mr := miniredis.RunT(t)
	store := newMiniredisStore(t, mr)
	key := tokencache.BackoffKey(tokencache.RecordKey(tokencache.DefaultKeyPrefix, testApp("graph-api", nil)))
	b := &tokencache.Backoff{Until: time.Now().Add(time.Minute).UTC(), Attempts: 1,
		Message: strings.Repeat("<", maxBackoffMessage), CredentialID: strings.Repeat("c", 4096)}
	if err := store.SetBackoff(t.Context(), key, b, time.Minute); err != nil {
		t.Fatal(err)
	}
	got, err := store.GetBackoff(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	if got.Message != "" || got.CredentialID != b.CredentialID || !got.Until.Equal(b.Until) {
		t.Errorf("GetBackoff() = %d-byte message; want the backoff without its message", len(got.Message))
	}
	b.CredentialID = "c"
	if err := store.SetBackoff(t.Context(), key, b, time.Minute); err != nil {
		t.Fatal(err)
	}
	if got, err := store.GetBackoff(t.Context(), key); err != nil || got.Message != b.Message {
		t.Errorf("a 1 KiB message of escaped bytes was not kept: %v", err)
	}
}

// TestOversizedAnnouncementIsIgnored: a message over tokencache.MaxAnnouncementBytes
// on an update channel wakes no watcher; a replica's does.
func TestOversizedAnnouncementIsIgnored(t *testing.T) {
	mr := miniredis.RunT(t)
	store := newMiniredisStore(t, mr)
	chA := tokencache.UpdateChannel(tokencache.RecordKey(tokencache.DefaultKeyPrefix, testApp("a", nil)))
	other := testApp("b", nil)
	other.CacheKey += "-other"
	chB := tokencache.UpdateChannel(tokencache.RecordKey(tokencache.DefaultKeyPrefix, other))
	a, cancelA := store.Watch(t.Context(), "", chA)
	defer cancelA()
	b, cancelB := store.Watch(t.Context(), "", chB)
	defer cancelB()
	publisher := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer publisher.Close()
	if err := publisher.Publish(t.Context(), chA, strings.Repeat("p", tokencache.MaxAnnouncementBytes+1)).Err(); err != nil {
		t.Fatal(err)
	}
	// Messages arrive in order on the store's one subscription: once B's
	// has, A's has been handled.
	if err := publisher.Publish(t.Context(), chB, tokencache.NewOwner()).Err(); err != nil {
		t.Fatal(err)
	}
	receive(t, b, "the announcement on B")
	select {
	case <-a:
		t.Fatal("an oversized announcement woke a watcher")
	default:
	}
	if err := publisher.Publish(t.Context(), chA, tokencache.NewOwner()).Err(); err != nil {
		t.Fatal(err)
	}
	receive(t, a, "a replica's announcement on A")
}

// TestAnnouncementsCarryTheRecordSealed: a watcher gets the record another
// store announced, opened as Get opens it; a store holding another key
// gets nil (it reads the store, and the record does not open there
// either), as does a watcher of an announcement without a record (an
// earlier version's, or a deletion).
func TestAnnouncementsCarryTheRecordSealed(t *testing.T) {
	mr := miniredis.RunT(t)
	sealed := func(key []byte) *Store {
		client := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
		s, err := newStore(client, Options{EncryptionKeys: [][]byte{key}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	publisher, watcher, stranger := sealed(testKey(1)), sealed(testKey(1)), sealed(testKey(2))
	key := tokencache.RecordKey(tokencache.DefaultKeyPrefix, testApp("graph-api", nil))
	channel := tokencache.UpdateChannel(key)
	got, cancel := watcher.Watch(t.Context(), key, channel)
	defer cancel()
	other, cancelOther := stranger.Watch(t.Context(), key, channel)
	defer cancelOther()
	rec := &tokencache.Record{ID: key, ApplicationName: "graph-api", AccessToken: "eyJ.announced.token",
		AccessTokenExpiresAt: time.Now().Add(time.Hour).UTC().Truncate(time.Millisecond)}
	if err := publisher.Publish(t.Context(), key, channel, rec); err != nil {
		t.Fatal(err)
	}
	if r := receive(t, got, "the announcement"); r == nil || r.AccessToken != rec.AccessToken || !r.AccessTokenExpiresAt.Equal(rec.AccessTokenExpiresAt) {
		t.Errorf("announced record %+v, want %+v", r, rec)
	}
	if r := receive(t, other, "the announcement to another key's holder"); r != nil {
		t.Error("a store with another encryption key opened the announced record")
	}
	if err := publisher.Publish(t.Context(), key, channel, nil); err != nil {
		t.Fatal(err)
	}
	if r := receive(t, got, "an announcement without a record"); r != nil {
		t.Errorf("announcement without a record delivered %+v", r)
	}
	// The message holds the record sealed, never the token in the clear.
	spy := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer spy.Close()
	sub := spy.Subscribe(t.Context(), channel)
	defer sub.Close()
	if _, err := sub.Receive(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := publisher.Publish(t.Context(), key, channel, rec); err != nil {
		t.Fatal(err)
	}
	msg := receive(t, sub.Channel(), "the message")
	if strings.Contains(msg.Payload, rec.AccessToken) {
		t.Error("the announcement carries the token in the clear")
	}
}

// count returns the number of watchers on channel.
func (w *watchers) count(channel string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.set[channel])
}
