package tokencache

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"go.uber.org/zap"
)

// fleetSealKeys seal the fleet's store in fleetExchangerWaiting's callers.
var fleetSealKeys = [][]byte{[]byte("0123456789abcdef0123456789abcdef")}

// fleetExchangerWaiting is one replica's Exchanger on store, with the
// fleet's hash key, whose requests wait at most wait.
func fleetExchangerWaiting(t *testing.T, store Store, clock *fakeClock, wait time.Duration) *Exchanger {
	t.Helper()
	c, err := New(Options{Store: store,
		Clock: realTimers{clock}, Logger: zap.NewNop(), PollInterval: 20 * time.Millisecond, WaitTimeout: wait})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return fleetExchanger(t, c)
}

// fleetExchanger is c's Exchanger of graph-as-user with the fleet's hash
// key, closed when the test ends.
func fleetExchanger(t *testing.T, c *Cache) *Exchanger {
	t.Helper()
	e, err := c.NewExchanger(ExchangeOptions{Name: "graph-as-user", Identity: testOBOIdentity, Scopes: []string{testOBOScope},
		HashKey: DeriveExchangeKey([]byte("fleet secret"))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

// An Entra slower than half of WaitTimeout (within it) costs the fleet one
// exchange: the holder extends its lock, which lasts three beats, while it
// exchanges, and the other replica waits for its token instead of giving
// up at half of WaitTimeout, exchanging too and failing its request (its
// own exchange ending after WaitTimeout).
func TestFleetWaitsForASlowExchangeInsteadOfExchangingAgain(t *testing.T) {
	const wait = 2 * time.Second
	mr := miniredis.RunT(t)
	clock := &fakeClock{now: time.Now()}
	a := fleetExchangerWaiting(t, patientStore(t, mr, fleetSealKeys), clock, wait)
	b := fleetExchangerWaiting(t, patientStore(t, mr, fleetSealKeys), clock, wait)
	var calls atomic.Int64
	entered, release := make(chan struct{}, 2), make(chan struct{})
	slow := func(ctx context.Context) (Fetched, error) {
		n := calls.Add(1)
		entered <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
			return Fetched{}, ctx.Err()
		}
		return Fetched{AccessToken: fmt.Sprintf("downstream-token-%d", n), ExpiresAt: clock.Now().Add(time.Hour)}, nil
	}
	notAfter := clock.Now().Add(2 * time.Hour)
	var fromA, fromB Record
	var errA, errB error
	var wg sync.WaitGroup
	wg.Go(func() { fromA, errA = a.Exchange(context.Background(), testUserToken, testTenant, notAfter, slow) })
	<-entered // a holds the lock and exchanges
	lock := LockKey(a.key(a.namer.digest(testUserToken)))
	if ttl := mr.TTL(lock); ttl <= 0 || ttl > 3*a.lockBeat() {
		t.Errorf("the holder's lock lasts %s; want at most three beats (%s), what a holder that dies leaves", ttl, 3*a.lockBeat())
	}
	wg.Go(func() { fromB, errB = b.Exchange(context.Background(), testUserToken, testTenant, notAfter, slow) })
	// Entra answers after three quarters of WaitTimeout: past the half the
	// other replica waited, within its request's wait.
	select {
	case <-entered:
		t.Error("the other replica exchanged while the holder's exchange ran")
	case <-time.After(wait * 3 / 4):
	}
	close(release)
	wg.Wait()
	if errA != nil || errB != nil || fromB.AccessToken != fromA.AccessToken || calls.Load() != 1 {
		t.Fatalf("holder: %v; other replica: %v (its token the holder's: %t); %d exchanges; want the holder's token and 1 exchange",
			errA, errB, fromB.AccessToken == fromA.AccessToken, calls.Load())
	}
}

// A lock a Redis writer planted once on a user token's entry, as long as a
// refresh lock, does not fail that user's requests: an exchange lock lasts
// a tenth of LockTTL on every replica, and a longer one is taken over.
func TestAnExchangeLockPlantedForLongIsTakenOver(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := &fakeClock{now: time.Now()}
	e := fleetExchangerWaiting(t, patientStore(t, mr, fleetSealKeys), clock, 300*time.Millisecond)
	lock := LockKey(e.key(e.namer.digest(testUserToken)))
	if err := mr.Set(lock, "planted"); err != nil {
		t.Fatal(err)
	}
	mr.SetTTL(lock, DefaultLockTTL)
	x := &exchangeCounter{clock: clock}
	if _, err := e.Exchange(t.Context(), testUserToken, testTenant, clock.Now().Add(2*time.Hour), x.exchange); err != nil || x.calls.Load() != 1 {
		t.Errorf("with a lock planted for %s: %v after %d exchanges, want the user's token", DefaultLockTTL, err, x.calls.Load())
	}
}

// A late refusal of an exchanged token another replica has already
// replaced drops nothing: not at a replica that holds no entry (the
// store's newer one is kept), nor by its announcement at a replica that
// holds the newer one.
func TestALateRefusalKeepsTheFleetsNewerEntry(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := &fakeClock{now: time.Now()}
	a, b := fleetExchangers(t, mr, clock, true)
	x := &exchangeCounter{clock: clock}
	notAfter := clock.Now().Add(2 * time.Hour)
	t1, err := a.Exchange(t.Context(), testUserToken, testTenant, notAfter, x.exchange)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Drop(t.Context(), testUserToken, t1.AccessToken) {
		t.Fatal("A did not drop the refused token")
	}
	t2, err := a.Exchange(t.Context(), testUserToken, testTenant, notAfter, x.exchange)
	if err != nil || t2.AccessToken == t1.AccessToken {
		t.Fatalf("A after the drop: %q, %v; want a new token", t2.AccessToken, err)
	}
	clock.Advance(DefaultPurgeInterval)
	key := a.key(a.namer.digest(testUserToken))
	if b.Drop(t.Context(), testUserToken, t1.AccessToken) || !mr.Exists(key) {
		t.Error("a late refusal at a replica without an entry dropped the store's newer one")
	}
	a.forgetDropped(&Record{ID: key, AccessToken: refusedPrint(t1.AccessToken)})
	if a.Len() != 1 {
		t.Error("the announced drop of the replaced token dropped the newer entry")
	}
	a.forgetDropped(&Record{ID: key, AccessToken: refusedPrint(t2.AccessToken)})
	if a.Len() != 0 {
		t.Error("the announced drop of the current token kept it")
	}
}

// A replica that holds the refused token drops it even when Redis holds
// another (it missed the announcement of the drop that replaced it).
func TestAReplicaHoldingTheRefusedTokenDropsItWhateverRedisHolds(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := &fakeClock{now: time.Now()}
	a, b := fleetExchangers(t, mr, clock, true)
	b.Close() // b's subscription lost: it misses A's announcement
	x := &exchangeCounter{clock: clock}
	notAfter := clock.Now().Add(2 * time.Hour)
	t1, err := a.Exchange(t.Context(), testUserToken, testTenant, notAfter, x.exchange)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := b.Exchange(t.Context(), testUserToken, testTenant, notAfter, x.exchange); err != nil || got.AccessToken != t1.AccessToken {
		t.Fatalf("b: %q %v", got.AccessToken, err)
	}
	if !a.Drop(t.Context(), testUserToken, t1.AccessToken) {
		t.Fatal("A did not drop")
	}
	t2, err := a.Exchange(t.Context(), testUserToken, testTenant, notAfter, x.exchange)
	if err != nil || t2.AccessToken == t1.AccessToken {
		t.Fatal(err)
	}
	for i := range 3 {
		clock.Advance(DefaultPurgeInterval)
		dropped := b.Drop(t.Context(), testUserToken, t1.AccessToken) // the downstream refuses t1 at B
		rec, found, _ := b.Lookup(testUserToken)
		if found && rec.AccessToken == t1.AccessToken {
			t.Errorf("challenge %d at B: Drop=%v, B still serves the refused token", i+1, dropped)
		}
	}
}

// A Redis writer who puts back an older sealed entry of the same user
// token cannot make a replica keep the refused current one.
func TestAReplayedOldEntryDoesNotKeepTheRefusedToken(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := &fakeClock{now: time.Now()}
	a, _ := fleetExchangers(t, mr, clock, true)
	x := &exchangeCounter{clock: clock}
	notAfter := clock.Now().Add(2 * time.Hour)
	key := a.key(a.namer.digest(testUserToken))
	t1, err := a.Exchange(t.Context(), testUserToken, testTenant, notAfter, x.exchange)
	if err != nil {
		t.Fatal(err)
	}
	old, err := mr.Get(key)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Drop(t.Context(), testUserToken, t1.AccessToken) {
		t.Fatal("A did not drop")
	}
	t2, err := a.Exchange(t.Context(), testUserToken, testTenant, notAfter, x.exchange)
	if err != nil || t2.AccessToken == t1.AccessToken {
		t.Fatal(err)
	}
	_ = mr.Set(key, old) // the writer's replay of t1's sealed entry
	for i := range 3 {
		clock.Advance(DefaultPurgeInterval)
		dropped := a.Drop(t.Context(), testUserToken, t2.AccessToken) // the downstream refuses t2
		rec, found, _ := a.Lookup(testUserToken)
		if found && rec.AccessToken == t2.AccessToken {
			t.Errorf("challenge %d: Drop=%v, A still serves the refused token", i+1, dropped)
		}
	}
}
