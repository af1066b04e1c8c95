package redisstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/caddy-entra/caddy-entra/tokencache"
)

// With Redis down at start, registering keys (a config load) waits for the
// shared subscription once, not OpTimeout per key as it used to.
func TestRegisteringKeysWhileRedisIsDownWaitsOnce(t *testing.T) {
	const keys, opTimeout = 20, 500 * time.Millisecond
	mr := miniredis.RunT(t)
	addr := mr.Addr()
	mr.Close() // Redis is down
	store, err := newStore(redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true}), Options{OpTimeout: opTimeout})
	if err != nil {
		t.Fatal(err)
	}
	c, err := tokencache.New(tokencache.Options{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	start := time.Now()
	for i := range keys {
		if _, err := c.Register(tokencache.Application{Name: fmt.Sprint("app-", i), CacheKey: fmt.Sprint("identity-", i),
			Scopes: []string{"https://graph.microsoft.com/.default"},
			Fetch:  func(context.Context) (tokencache.Fetched, error) { return tokencache.Fetched{}, nil }}); err != nil {
			t.Fatal(err)
		}
	}
	if took := time.Since(start); took > 4*opTimeout {
		t.Errorf("registering %d keys with Redis down took %v, want about %v (once)", keys, took, opTimeout)
	}
}

// A Watch made while Redis is down receives announcements once Redis is
// back: the shared subscription is made then.
func TestAWatchMadeWhileRedisIsDownReceivesOnceItIsBack(t *testing.T) {
	mr := miniredis.RunT(t)
	store := newMiniredisStore(t, mr)
	mr.Close() // Redis is down
	const channel = "entra:{k}:updated"
	updates, cancel := store.Watch(t.Context(), "entra:{k}:token", channel)
	defer cancel()
	restartAndPublish(t, mr, channel)
	receive(t, updates, "the announcement")
}

// restartAndPublish brings Redis back and publishes on channel, as another
// replica, once a subscriber (the store's) receives it; it returns the
// other replica's client.
func restartAndPublish(t *testing.T, mr *miniredis.Miniredis, channel string) *redis.Client {
	t.Helper()
	if err := mr.Restart(); err != nil {
		t.Fatal(err)
	}
	other := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { other.Close() })
	retry := time.NewTicker(20 * time.Millisecond) // the subscription's retries pause up to 5 s
	defer retry.Stop()
	for deadline := time.Now().Add(10 * time.Second); other.Publish(t.Context(), channel, "another-replica").Val() != 1; <-retry.C {
		if time.Now().After(deadline) {
			t.Fatal("no subscriber 10 s after Redis came back")
		}
	}
	return other
}

// A Watch made after the store-wide deadline, while Redis is down, returns
// at once and still receives once Redis is back: the subscription is one
// for the store, so waiting would only delay its caller, not make it
// receive more.
func TestAWatchAfterTheDeadlineReceivesOnceRedisIsBack(t *testing.T) {
	const opTimeout = 300 * time.Millisecond
	mr := miniredis.RunT(t)
	store, err := newStore(redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true}), Options{OpTimeout: opTimeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	mr.Close() // Redis is down
	// The first Watch waits out the deadline.
	first, cancelFirst := store.Watch(t.Context(), "entra:{a}:token", "entra:{a}:updated")
	defer cancelFirst()
	start := time.Now()
	late, cancelLate := store.Watch(t.Context(), "entra:{b}:token", "entra:{b}:updated")
	defer cancelLate()
	if took := time.Since(start); took >= opTimeout {
		t.Errorf("a Watch after the deadline took %v, want it at once", took)
	}
	other := restartAndPublish(t, mr, "entra:{b}:updated")
	receive(t, late, "the announcement to the Watch made after the deadline")
	other.Publish(t.Context(), "entra:{a}:updated", "another-replica")
	receive(t, first, "the announcement to the first Watch")
}
