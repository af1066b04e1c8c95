package tokencache

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// credSwitch is a CredentialIDFunc whose credential the test rotates, counting calls.
type credSwitch struct {
	id    atomic.Value
	calls atomic.Int64
}

func newCredSwitch(id string) *credSwitch { c := &credSwitch{}; c.id.Store(id); return c }
func (c *credSwitch) fn() string          { c.calls.Add(1); return c.id.Load().(string) }

// A permanent backoff of a credential since rotated away, ending later
// than the fleet's transient one (a 429 every replica obeys), does not keep
// the replica from adopting the fleet's: it waits with the fleet.
func TestAnOldCredentialsPauseDoesNotHideTheFleets(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := &fakeClock{now: time.Now()}
	cred := newCredSwitch("A")
	store := patientStore(t, mr, fleetSealKeys)
	e := newTestExchanger(t, store, clock, ExchangeOptions{HashKey: DeriveExchangeKey([]byte("fleet secret")), CredentialIDFunc: cred.fn})
	notAfter := clock.Now().Add(2 * time.Hour)
	bad := &exchangeCounter{clock: clock, err: &classifiedError{permanent: true}}
	if _, err := e.Exchange(t.Context(), testUserToken, testTenant, notAfter, bad.exchange); err == nil {
		t.Fatal("want a permanent failure")
	}
	cred.id.Store("B") // rotated on disk
	// Another replica was throttled: 3 s, shorter than the stale permanent (>= 5 s).
	if err := store.SetBackoff(t.Context(), e.backoffKey(testTenant), &Backoff{Until: clock.Now().Add(3 * time.Second), Attempts: 1}, time.Minute); err != nil {
		t.Fatal(err)
	}
	good := &exchangeCounter{clock: clock}
	_, err := e.Exchange(t.Context(), testOtherUser, testTenant, notAfter, good.exchange)
	if err == nil || good.calls.Load() != 0 {
		t.Errorf("fleet's transient backoff ignored: err=%v, %d exchanges sent during the fleet's pause; want 0", err, good.calls.Load())
	}
}

// The fleet's backoff of a tenant's exchanges carries no credential ID: it
// binds every replica, and a Redis reader learns nothing of the rotations.
func TestTheFleetsExchangeBackoffNamesNoCredential(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := &fakeClock{now: time.Now()}
	cred := newCredSwitch("credential-fingerprint-A")
	store := patientStore(t, mr, fleetSealKeys)
	e := newTestExchanger(t, store, clock, ExchangeOptions{HashKey: DeriveExchangeKey([]byte("fleet secret")), CredentialIDFunc: cred.fn})
	tr := &exchangeCounter{clock: clock, err: &classifiedError{retryAfter: 30 * time.Second}}
	_, _ = e.Exchange(t.Context(), testUserToken, testTenant, clock.Now().Add(time.Hour), tr.exchange)
	b, err := store.GetBackoff(t.Context(), e.backoffKey(testTenant))
	if err != nil {
		t.Fatal(err)
	}
	if b.CredentialID != "" {
		t.Errorf("the fleet's exchange backoff carries credentialId %q", b.CredentialID)
	}
}

// Attempts are counted per credential: a rotated credential's first
// permanent failure starts its backoff afresh.
func TestExchangeBackoffAttemptsStartAfreshForANewCredential(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	cred := newCredSwitch("A")
	e := newTestExchanger(t, nil, clock, ExchangeOptions{CredentialIDFunc: cred.fn})
	notAfter := clock.Now().Add(20 * time.Hour)
	permanent := &exchangeCounter{clock: clock, err: &classifiedError{permanent: true}}
	transient := &exchangeCounter{clock: clock, err: &classifiedError{}}
	users := 0
	fail := func(with *exchangeCounter, want int) {
		t.Helper()
		users++
		clock.Advance(10 * time.Minute) // past the last backoff
		_, _ = e.Exchange(t.Context(), fmt.Sprint("user-", users), testTenant, notAfter, with.exchange)
		e.mu.Lock()
		got := e.backoffs[testTenant].Attempts
		e.mu.Unlock()
		if got != want {
			t.Errorf("failure %d (credential %s) counted %d attempts, want %d", users, cred.id.Load(), got, want)
		}
	}
	fail(permanent, 1)
	fail(permanent, 2)
	fail(permanent, 3)
	cred.id.Store("B") // rotated
	fail(permanent, 1)
	fail(transient, 2) // a transient failure binds every credential
	cred.id.Store("A")
	fail(permanent, 3)
}

// Room for a new tenant's backoff is made by dropping a permanent backoff
// of a credential rotated away (it pauses no one), not a live one: a
// tenant's throttling pause is kept.
func TestRoomForABackoffIsMadeFromAnOldCredentialsPause(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	cred := newCredSwitch("A")
	e := newTestExchanger(t, nil, clock, ExchangeOptions{Tenants: 2, CredentialIDFunc: cred.fn})
	notAfter := clock.Now().Add(time.Hour)
	permanent := &exchangeCounter{clock: clock, err: &classifiedError{permanent: true}}
	// Throttled for 2 s: ending before the old credential's pause (5 s or more).
	throttled := &exchangeCounter{clock: clock, err: &classifiedError{retryAfter: 2 * time.Second}}
	_, _ = e.Exchange(t.Context(), "user-1", "tenant-x", notAfter, permanent.exchange) // A's pause at x
	cred.id.Store("B")                                                                 // rotated
	_, _ = e.Exchange(t.Context(), "user-2", "tenant-y", notAfter, throttled.exchange) // y throttled
	_, _ = e.Exchange(t.Context(), "user-3", "tenant-z", notAfter, permanent.exchange) // room for z
	good := &exchangeCounter{clock: clock}
	if _, err := e.Exchange(t.Context(), "user-4", "tenant-y", notAfter, good.exchange); err == nil || good.calls.Load() != 0 {
		t.Errorf("an exchange at the throttled tenant was sent (%d) within its pause: its backoff was dropped to keep an old credential's", good.calls.Load())
	}
}
