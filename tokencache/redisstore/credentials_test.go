package redisstore

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// rotatingPassword is a Credentials func whose password the test rotates.
type rotatingPassword struct {
	mu       sync.Mutex
	password string
	calls    atomic.Int64
}

func (r *rotatingPassword) credentials(context.Context) (string, string, error) {
	r.calls.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	return "sidecar", r.password, nil
}

func (r *rotatingPassword) rotate(mr *miniredis.Miniredis, password string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.password = password
	mr.RequireUserAuth("sidecar", password) // the old one stops working
}

// With Credentials and MaxConnectionAge, each new connection takes the
// current password and the shared subscription is renewed: after the
// password is rotated (the old one refused), the store still reads and
// writes, and still receives announcements.
func TestConnectionsFollowARotatedPassword(t *testing.T) {
	mr := miniredis.RunT(t)
	creds := &rotatingPassword{}
	creds.rotate(mr, "token-1")
	const age = 100 * time.Millisecond
	// RESP2: go-redis authenticates with AUTH, which miniredis (2.40.0)
	// checks under its lock, not with HELLO, which reads the passwords
	// unlocked and races with RequireUserAuth under -race.
	url := "redis://" + mr.Addr() + "?protocol=2"
	store, err := New(Options{URL: url, Credentials: creds.credentials, MaxConnectionAge: age})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	publisher, err := New(Options{URL: url, Credentials: creds.credentials, MaxConnectionAge: age})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = publisher.Close() })
	ctx := t.Context()
	updates, cancel := store.Watch(ctx, "entra:k", "entra:k:updated")
	defer cancel()

	for _, password := range []string{"token-2", "token-3"} {
		before := creds.calls.Load()
		creds.rotate(mr, password)
		// Every connection made before the rotation is retired or renewed
		// (the pool's when next taken, the subscription's on its ticker).
		eventually(t, "the subscription renewed with "+password, func() bool { return creds.calls.Load() > before })
		time.Sleep(2 * age) // let every pooled connection pass MaxConnectionAge: the subject of the test
		if err := store.Ping(ctx); err != nil {
			t.Fatalf("after the rotation to %s: %v", password, err)
		}
		if err := publisher.Publish(ctx, "", "entra:k:updated", nil); err != nil {
			t.Fatalf("publishing after the rotation to %s: %v", password, err)
		}
		receive(t, updates, "an announcement after the rotation to "+password)
	}
}
