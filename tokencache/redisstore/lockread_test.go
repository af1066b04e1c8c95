package redisstore

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// lostLockAnswerHook loses the first SETNX's answer (the lock is taken, as
// a slow Redis does), optionally lets a Redis writer replace the lock's
// value before the retry, and counts the bytes the retry's read brings back.
type lostLockAnswerHook struct {
	passThrough
	mr        *miniredis.Miniredis
	key       string
	planted   string // "": the lock keeps this replica's owner
	calls     atomic.Int64
	readBytes atomic.Int64
}

func (h *lostLockAnswerHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		switch cmd.Name() {
		case "hello", "client", "ping":
			return next(ctx, cmd)
		}
		if h.calls.Add(1) == 1 {
			_ = next(ctx, cmd)
			if h.planted != "" { // as another replica's lock: expiring within the ttl
				_ = h.mr.Set(h.key, h.planted)
				h.mr.SetTTL(h.key, time.Minute)
			}
			cmd.SetErr(context.DeadlineExceeded)
			return context.DeadlineExceeded
		}
		err := next(ctx, cmd)
		if c, ok := cmd.(*redis.StringCmd); ok {
			h.readBytes.Add(int64(len(c.Val())))
		}
		return err
	}
}

// After a lost SETNX answer, TryLock reads the lock back bounded: a value
// a Redis writer planted (8 MiB) never leaves Redis whole, and the lock
// its own attempt took is still found to be its own.
func TestTryLockReadsTheLockBackBounded(t *testing.T) {
	for _, planted := range []string{strings.Repeat("x", 8<<20), ""} {
		mr := miniredis.RunT(t)
		hook := &lostLockAnswerHook{mr: mr, key: "lock", planted: planted}
		warmLockScript(t, mr) // the lost answer is the lock's, not a NOSCRIPT
		client := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
		client.AddHook(hook)
		store, err := newStore(client, Options{OpTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = store.Close() })
		_, ok, err := store.TryLock(t.Context(), "lock", time.Minute)
		if err != nil || ok != (planted == "") {
			t.Fatalf("planted %d bytes: TryLock = %v, %v; want %v", len(planted), ok, err, planted == "")
		}
		if n := hook.readBytes.Load(); n > 64 {
			t.Errorf("the retry read %d bytes of a planted lock value; an owner is 32", n)
		}
	}
}

// A lock a Redis writer replaced with a list is not held: releasing or
// extending it reports so, without an error that would count as an outage.
func TestALockOfAnotherTypeIsNotHeld(t *testing.T) {
	mr := miniredis.RunT(t)
	store, err := newStore(redis.NewClient(&redis.Options{Addr: mr.Addr()}), Options{OpTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	owner, ok, err := store.TryLock(t.Context(), "lock", time.Minute)
	if err != nil || !ok {
		t.Fatalf("TryLock = %v, %v", ok, err)
	}
	mr.Del("lock")
	if _, err := mr.Lpush("lock", owner); err != nil {
		t.Fatal(err)
	}
	if extended, err := store.ExtendLock(t.Context(), "lock", owner, time.Minute); extended || err != nil {
		t.Errorf("ExtendLock of a list = %v, %v; want false, nil", extended, err)
	}
	if released, err := store.Unlock(t.Context(), "lock", owner); released || err != nil {
		t.Errorf("Unlock of a list = %v, %v; want false, nil", released, err)
	}
}

// A lock no replica sets — with no expiry, expiring later than the lock's
// ttl, or of another type — is a Redis writer's: TryLock takes it over. A
// lock that lasts at most the ttl, as a replica's does, stays held.
func TestTryLockTakesOverALockNoReplicaSets(t *testing.T) {
	mr := miniredis.RunT(t)
	store := newMiniredisStore(t, mr)
	const ttl = 15 * time.Second
	for _, c := range []struct {
		name  string
		plant func(key string)
		taken bool
	}{
		{"no expiry", func(k string) { _ = mr.Set(k, "planted") }, true},
		{"a day", func(k string) { _ = mr.Set(k, "planted"); mr.SetTTL(k, 24*time.Hour) }, true},
		{"a list", func(k string) { _, _ = mr.Push(k, "planted"); mr.SetTTL(k, ttl) }, true},
		{"the lock's ttl", func(k string) { _ = mr.Set(k, "planted"); mr.SetTTL(k, ttl) }, false},
		// A Redis whose clock is behind (a failover) makes a replica's
		// lock look longer: kept up to three times its length.
		{"a replica's longer one", func(k string) { _ = mr.Set(k, "planted"); mr.SetTTL(k, 3*ttl) }, false},
		{"over 3×LockTTL", func(k string) { _ = mr.Set(k, "planted"); mr.SetTTL(k, 3*ttl+time.Second) }, true},
		{"a replica's", func(k string) {
			if _, ok, err := store.TryLock(t.Context(), k, ttl); !ok || err != nil {
				t.Fatalf("first TryLock = %v, %v", ok, err)
			}
		}, false},
	} {
		key := "lock:" + c.name
		c.plant(key)
		owner, ok, err := store.TryLock(t.Context(), key, ttl)
		if err != nil || ok != c.taken {
			t.Errorf("%s: TryLock = %v, %v; want %v", c.name, ok, err, c.taken)
		}
		if held, _ := mr.Get(key); ok && (held != owner || mr.TTL(key) != ttl) {
			t.Errorf("%s: the lock taken over holds %q for %s, want the owner for %s", c.name, held, mr.TTL(key), ttl)
		}
	}
	// An exchange lock (a tenth of LockTTL) that a writer planted for as
	// long as a refresh lock is taken over: it cannot stall a user's requests.
	_ = mr.Set("lock:exchange", "planted")
	mr.SetTTL("lock:exchange", ttl)
	if _, ok, err := store.TryLock(t.Context(), "lock:exchange", ttl/10); !ok || err != nil {
		t.Errorf("an exchange's TryLock against a lock planted for %s = %v, %v; want it taken over", ttl, ok, err)
	}
}

// warmLockScript has Redis run the lock script once, as any replica's first
// lock does: a lock attempt is then one EVALSHA, not a NOSCRIPT and an EVAL.
func warmLockScript(t *testing.T, mr *miniredis.Miniredis) {
	t.Helper()
	if _, _, err := newMiniredisStore(t, mr).TryLock(t.Context(), "warm-up", time.Minute); err != nil {
		t.Fatal(err)
	}
}
