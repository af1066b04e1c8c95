package tokencache

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

const (
	testUserToken   = "eyJhbGciOiJSUzI1NiJ9.eyJvaWQiOiJ1c2VyLTEiLCJ0aWQiOiJ0LTEifQ.c2lnbmF0dXJlLW9mLXVzZXItMQ"
	testOtherUser   = "eyJhbGciOiJSUzI1NiJ9.eyJvaWQiOiJ1c2VyLTIiLCJ0aWQiOiJ0LTEifQ.c2lnbmF0dXJlLW9mLXVzZXItMg"
	testOBOScope    = "https://graph.microsoft.com/User.Read"
	testOBOIdentity = testCacheKey
	testTenant      = "11111111-0000-4000-8000-111111111111" // the user tokens' tenant
)

// exchangeCounter is an exchange function that counts its calls and
// returns a distinct downstream token per call, valid for an hour.
type exchangeCounter struct {
	clock *fakeClock
	calls atomic.Int64
	err   error
}

func (x *exchangeCounter) exchange(context.Context) (Fetched, error) {
	n := x.calls.Add(1)
	if x.err != nil {
		return Fetched{}, x.err
	}
	return Fetched{AccessToken: fmt.Sprintf("downstream-token-%d", n), ExpiresAt: x.clock.Now().Add(time.Hour)}, nil
}

// newTestExchanger returns an Exchanger on a new Cache over store (nil: a
// MemoryStore), judging time by clock.
func newTestExchanger(t *testing.T, store Store, clock *fakeClock, opts ExchangeOptions) *Exchanger {
	t.Helper()
	c, err := New(Options{Store: store, Clock: realTimers{clock}, Logger: zap.NewNop(), PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	opts.Name = "graph-as-user"
	opts.Identity = testOBOIdentity
	if opts.Scopes == nil {
		opts.Scopes = []string{testOBOScope}
	}
	e, err := c.NewExchanger(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

// userRejection is an error the test's Rejected takes for a refusal of
// the user's token.
var userRejection = errors.New("invalid_grant: the user's token was refused")

func rejectUserRejection(err error) (time.Duration, bool) {
	if errors.Is(err, userRejection) {
		return time.Hour, true
	}
	return 0, false
}

// exchangeEntryKeyOf is the store key of userToken's entry.
func exchangeEntryKeyOf(prefix string, hashKey []byte, identity string, scopes []string, userToken string) string {
	return exchangeEntryKey(prefix, newEntryNamer(hashKey, identity, scopes).digest(userToken))
}

func TestExchangeKeyNamesNoUserToken(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	base := exchangeEntryKeyOf("entra:", key, testOBOIdentity, []string{"a", "b"}, testUserToken)
	if !strings.HasPrefix(base, "entra:{") || !strings.HasSuffix(base, "}:token") || len(base) != len("entra:{}:token")+32 {
		t.Fatalf("entry key %q: want entra:{<32 hex>}:token", base)
	}
	for _, part := range strings.Split(testUserToken, ".") {
		if strings.Contains(base, part[:8]) {
			t.Errorf("the entry key holds part of the user token")
		}
	}
	if got := exchangeEntryKeyOf("entra:", key, testOBOIdentity, []string{"b", "a", "b"}, testUserToken); got != base {
		t.Errorf("scope order or repetition changed the key")
	}
	for name, other := range map[string]string{
		"another user token": exchangeEntryKeyOf("entra:", key, testOBOIdentity, []string{"a", "b"}, testOtherUser),
		"another identity":   exchangeEntryKeyOf("entra:", key, testOBOIdentity+"x", []string{"a", "b"}, testUserToken),
		"other scopes":       exchangeEntryKeyOf("entra:", key, testOBOIdentity, []string{"a"}, testUserToken),
		"another hash key":   exchangeEntryKeyOf("entra:", []byte("another key"), testOBOIdentity, []string{"a", "b"}, testUserToken),
		"the drop key":       exchangeDropKey("entra:", newEntryNamer(key, testOBOIdentity, []string{"a", "b"})),
	} {
		if other == base {
			t.Errorf("%s: same entry key", name)
		}
	}
	if d, ok := parseEntryKey("entra:", base); !ok || exchangeEntryKey("entra:", d) != base {
		t.Errorf("the entry key %q does not parse back", base)
	}
	if string(DeriveExchangeKey([]byte("secret"))) == string(DeriveExchangeKey([]byte("secret2"))) ||
		string(DeriveExchangeKey([]byte("secret"))) == "secret" {
		t.Error("DeriveExchangeKey does not depend on its secret")
	}
}

func TestExchangeOncePerUserToken(t *testing.T) {
	clock := newFakeClock()
	x := &exchangeCounter{clock: clock}
	e := newTestExchanger(t, nil, clock, ExchangeOptions{})
	notAfter := clock.Now().Add(2 * time.Hour)
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if _, err := e.Exchange(t.Context(), testUserToken, testTenant, notAfter, x.exchange); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := x.calls.Load(); n != 1 {
		t.Fatalf("50 concurrent requests with one user token made %d exchanges, want 1", n)
	}
	first, _ := e.Exchange(t.Context(), testUserToken, testTenant, notAfter, x.exchange)
	second, err := e.Exchange(t.Context(), testOtherUser, testTenant, notAfter, x.exchange)
	if err != nil || second.AccessToken == first.AccessToken || x.calls.Load() != 2 {
		t.Fatalf("another user token got %q (%v) after %d exchanges: want its own exchange", second.AccessToken, err, x.calls.Load())
	}
}

func TestExchangedTokenNeverOutlivesTheUserToken(t *testing.T) {
	clock := newFakeClock()
	x := &exchangeCounter{clock: clock}
	e := newTestExchanger(t, nil, clock, ExchangeOptions{})
	notAfter := clock.Now().Add(10 * time.Minute) // the user token expires before the downstream token
	if _, err := e.Exchange(t.Context(), testUserToken, testTenant, notAfter, x.exchange); err != nil {
		t.Fatal(err)
	}
	clock.Advance(10*time.Minute - time.Second)
	if _, err := e.Exchange(t.Context(), testUserToken, testTenant, notAfter, x.exchange); err != nil || x.calls.Load() != 1 {
		t.Fatalf("before the user token's exp: %v, %d exchanges; want the cached token", err, x.calls.Load())
	}
	clock.Advance(time.Second)
	_, err := e.Exchange(t.Context(), testUserToken, testTenant, notAfter, x.exchange)
	if !errors.Is(err, ErrUserTokenExpired) || x.calls.Load() != 1 {
		t.Fatalf("at the user token's exp: %v, %d exchanges; want ErrUserTokenExpired and no exchange", err, x.calls.Load())
	}

	// A downstream token expiring first is used until RefreshWindow before
	// its expiry, then exchanged again with the same user token.
	later := clock.Now().Add(3 * time.Hour)
	if _, err := e.Exchange(t.Context(), testOtherUser, testTenant, later, x.exchange); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour - DefaultRefreshWindow - time.Second)
	if _, _ = e.Exchange(t.Context(), testOtherUser, testTenant, later, x.exchange); x.calls.Load() != 2 {
		t.Fatalf("%d exchanges, want the cached token before the refresh window", x.calls.Load())
	}
	clock.Advance(time.Second)
	if _, err := e.Exchange(t.Context(), testOtherUser, testTenant, later, x.exchange); err != nil || x.calls.Load() != 3 {
		t.Fatalf("in the refresh window: %v, %d exchanges; want a new exchange", err, x.calls.Load())
	}
}

func TestExchangeCacheIsBoundedLeastRecentlyUsedOut(t *testing.T) {
	clock := newFakeClock()
	x := &exchangeCounter{clock: clock}
	e := newTestExchanger(t, nil, clock, ExchangeOptions{MaxEntries: 3})
	notAfter := clock.Now().Add(2 * time.Hour)
	user := func(i int) string { return fmt.Sprintf("user-token-%d", i) }
	for i := range 3 {
		if _, err := e.Exchange(t.Context(), user(i), testTenant, notAfter, x.exchange); err != nil {
			t.Fatal(err)
		}
	}
	_, _ = e.Exchange(t.Context(), user(0), testTenant, notAfter, x.exchange) // 0 is now the most recently used
	for i := 3; i < 5; i++ {
		_, _ = e.Exchange(t.Context(), user(i), testTenant, notAfter, x.exchange)
	}
	if n := e.Len(); n != 3 {
		t.Fatalf("%d entries held, want the bound 3", n)
	}
	calls := x.calls.Load()
	_, _ = e.Exchange(t.Context(), user(0), testTenant, notAfter, x.exchange)
	if x.calls.Load() != calls {
		t.Error("the most recently used entry was pushed out")
	}
	_, _ = e.Exchange(t.Context(), user(1), testTenant, notAfter, x.exchange)
	if x.calls.Load() != calls+1 {
		t.Error("the least recently used entry was kept past the bound")
	}
}

func TestRejectedUserTokenIsRememberedWithoutBackoff(t *testing.T) {
	clock := newFakeClock()
	rejecting := &exchangeCounter{clock: clock, err: userRejection}
	good := &exchangeCounter{clock: clock}
	var results sync.Map
	e := newTestExchanger(t, nil, clock, ExchangeOptions{Rejected: rejectUserRejection, MaxEntries: 10,
		OnExchange: func(r ExchangeResult) {
			n, _ := results.LoadOrStore(r, new(atomic.Int64))
			n.(*atomic.Int64).Add(1)
		}})
	notAfter := clock.Now().Add(30 * time.Minute)
	for range 1000 {
		_, err := e.Exchange(t.Context(), testUserToken, testTenant, notAfter, rejecting.exchange)
		var te *Error
		if !errors.As(err, &te) || !errors.Is(err, userRejection) || !te.Permanent || te.RetryAfter != 0 {
			t.Fatalf("got %v, want the user token's refusal", err)
		}
	}
	if n := rejecting.calls.Load(); n != 1 {
		t.Fatalf("a refused user token replayed 1,000 times made %d exchanges, want 1", n)
	}
	if n, _ := results.Load(ExchangeRejected); n == nil || n.(*atomic.Int64).Load() != 1000 {
		t.Errorf("rejected results: %v, want 1000", n)
	}
	if _, err := e.Exchange(t.Context(), testOtherUser, testTenant, notAfter, good.exchange); err != nil || good.calls.Load() != 1 {
		t.Fatalf("another user after a refused token: %v, %d exchanges; want an exchange (no backoff)", err, good.calls.Load())
	}
	// Remembered until the user token's exp, not after.
	clock.Advance(30 * time.Minute)
	if _, err := e.Exchange(t.Context(), testUserToken, testTenant, notAfter.Add(time.Hour), rejecting.exchange); err == nil || rejecting.calls.Load() != 2 {
		t.Fatalf("after the remembered refusal ended: %v, %d exchanges; want a new exchange", err, rejecting.calls.Load())
	}
}

func TestApplicationFailureBacksOff(t *testing.T) {
	clock := newFakeClock()
	failing := &exchangeCounter{clock: clock, err: &classifiedError{permanent: true}}
	e := newTestExchanger(t, nil, clock, ExchangeOptions{Rejected: rejectUserRejection})
	notAfter := clock.Now().Add(time.Hour)
	if _, err := e.Exchange(t.Context(), testUserToken, testTenant, notAfter, failing.exchange); err == nil {
		t.Fatal("a failing exchange succeeded")
	}
	_, err := e.Exchange(t.Context(), testOtherUser, testTenant, notAfter, failing.exchange)
	var te *Error
	if !errors.As(err, &te) || !te.Permanent || failing.calls.Load() != 1 {
		t.Fatalf("while backed off: %v, %d exchanges; want a permanent error and no exchange", err, failing.calls.Load())
	}
	clock.Advance(permanentBackoffMax)
	good := &exchangeCounter{clock: clock}
	if _, err := e.Exchange(t.Context(), testOtherUser, testTenant, notAfter.Add(permanentBackoffMax), good.exchange); err != nil {
		t.Fatalf("after the backoff: %v", err)
	}
}

// fleetExchangers returns two Exchangers on two Caches sharing mr, each
// with its own sealed store, with the same hash key.
func fleetExchangers(t *testing.T, mr *miniredis.Miniredis, clock *fakeClock, encrypted bool) (a, b *Exchanger) {
	var keys [][]byte
	if encrypted {
		keys = [][]byte{[]byte("0123456789abcdef0123456789abcdef")}
	}
	hashKey := DeriveExchangeKey([]byte("fleet secret"))
	a = newTestExchanger(t, patientStore(t, mr, keys), clock, ExchangeOptions{HashKey: hashKey})
	b = newTestExchanger(t, patientStore(t, mr, keys), clock, ExchangeOptions{HashKey: hashKey})
	return a, b
}

// patientStore is a redisstore on mr sealing with keys whose Watch waits
// up to 2 s (its OpTimeout) for the subscription to be confirmed, so that
// on a loaded machine no announcement is published before a watcher
// listens.
func patientStore(t *testing.T, mr *miniredis.Miniredis, keys [][]byte) Store {
	t.Helper()
	store, err := newRedisStore(redisOptions{URL: "redis://" + mr.Addr(), EncryptionKeys: keys, OpTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	return store
}

func TestFleetSharesExchangesSealed(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := &fakeClock{now: time.Now()} // miniredis judges TTLs by real time
	a, b := fleetExchangers(t, mr, clock, true)
	if !a.Shared() || !b.Shared() {
		t.Fatal("exchangers on a sealed Redis store do not share")
	}
	x := &exchangeCounter{clock: clock}
	notAfter := clock.Now().Add(2 * time.Hour)
	fromA, err := a.Exchange(t.Context(), testUserToken, testTenant, notAfter, x.exchange)
	if err != nil {
		t.Fatal(err)
	}
	fromB, err := b.Exchange(t.Context(), testUserToken, testTenant, notAfter, x.exchange)
	if err != nil || fromB.AccessToken != fromA.AccessToken || x.calls.Load() != 1 {
		t.Fatalf("replica B: %v, %d exchanges; want A's exchange", err, x.calls.Load())
	}
	for _, key := range mr.Keys() {
		value, _ := mr.Get(key)
		for _, secret := range append(strings.Split(testUserToken, "."), testUserToken, fromA.AccessToken) {
			if strings.Contains(key, secret) || strings.Contains(value, secret) {
				t.Errorf("Redis key %q or its value holds a user or downstream token in plaintext", key)
			}
		}
	}

	// A drop on A reaches B's L1 through the announcement.
	a.Drop(t.Context(), testUserToken, "")
	deadline := time.Now().Add(5 * time.Second)
	for b.Len() != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond) // the announcement travels through miniredis
	}
	if b.Len() != 0 {
		t.Fatal("replica B kept an entry replica A dropped")
	}
	if _, err := b.Exchange(t.Context(), testUserToken, testTenant, notAfter, x.exchange); err != nil || x.calls.Load() != 2 {
		t.Fatalf("after the drop: %v, %d exchanges; want a new exchange", err, x.calls.Load())
	}
}

func TestFleetExchangesOncePerUserToken(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := &fakeClock{now: time.Now()}
	a, b := fleetExchangers(t, mr, clock, true)
	release := make(chan struct{})
	var calls atomic.Int64
	slow := func(context.Context) (Fetched, error) {
		calls.Add(1)
		<-release
		return Fetched{AccessToken: "downstream-token", ExpiresAt: clock.Now().Add(time.Hour)}, nil
	}
	notAfter := clock.Now().Add(2 * time.Hour)
	var wg sync.WaitGroup
	for _, e := range []*Exchanger{a, b, a, b} {
		wg.Go(func() {
			if _, err := e.Exchange(context.Background(), testUserToken, testTenant, notAfter, slow); err != nil {
				t.Error(err)
			}
		})
	}
	deadline := time.Now().Add(5 * time.Second)
	for mr.Exists(LockKey(a.key(a.namer.digest(testUserToken)))) == false && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	wg.Wait()
	if n := calls.Load(); n != 1 {
		t.Fatalf("two replicas with one user token made %d exchanges, want 1", n)
	}
}

func TestPlaintextStoreNeverHoldsExchanges(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := &fakeClock{now: time.Now()}
	a, b := fleetExchangers(t, mr, clock, false)
	if a.Shared() {
		t.Fatal("an exchanger shares through a store that does not seal")
	}
	x := &exchangeCounter{clock: clock}
	notAfter := clock.Now().Add(2 * time.Hour)
	_, _ = a.Exchange(t.Context(), testUserToken, testTenant, notAfter, x.exchange)
	_, _ = b.Exchange(t.Context(), testUserToken, testTenant, notAfter, x.exchange)
	if keys := mr.Keys(); len(keys) != 0 || x.calls.Load() != 2 {
		t.Fatalf("Redis keys %v, %d exchanges: want none written, one exchange per replica", keys, x.calls.Load())
	}
}

func TestExchangeResultsCountOneExchangePerFlight(t *testing.T) {
	clock := newFakeClock()
	release := make(chan struct{})
	var results sync.Map
	e := newTestExchanger(t, nil, clock, ExchangeOptions{OnExchange: func(r ExchangeResult) {
		n, _ := results.LoadOrStore(r, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
	}})
	var started atomic.Int64
	slow := func(context.Context) (Fetched, error) {
		<-release
		return Fetched{AccessToken: "downstream-token", ExpiresAt: clock.Now().Add(time.Hour)}, nil
	}
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			started.Add(1)
			_, _ = e.Exchange(t.Context(), testUserToken, testTenant, clock.Now().Add(2*time.Hour), slow)
		})
	}
	for started.Load() < 20 {
		runtime.Gosched()
	}
	close(release)
	wg.Wait()
	count := func(r ExchangeResult) int64 {
		n, _ := results.Load(r)
		if n == nil {
			return 0
		}
		return n.(*atomic.Int64).Load()
	}
	if count(ExchangeExchanged) != 1 || count(ExchangeHit) != 19 {
		t.Errorf("exchanged %d, hit %d; want 1 and 19", count(ExchangeExchanged), count(ExchangeHit))
	}
}

// A lock its holder never released (it died, or its release timed out)
// lapses within three beats of its last extension, and a waiting request
// takes it at its next try: within WaitTimeout.
func TestExchangeLockLeftBehindIsTakenOnceItLapses(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := &fakeClock{now: time.Now()}
	lost := make(chan struct{}, 1)
	e := fleetExchangerWaiting(t, &spyStore{Store: patientStore(t, mr, fleetSealKeys), onLockLost: func() {
		select {
		case lost <- struct{}{}:
		default:
		}
	}}, clock, 2*time.Second)
	key := e.key(e.namer.digest(testUserToken))
	if err := mr.Set(LockKey(key), "a replica that died"); err != nil {
		t.Fatal(err)
	}
	mr.SetTTL(LockKey(key), 3*e.lockBeat())
	var lapsed atomic.Bool
	x := &exchangeCounter{clock: clock}
	exchange := func(ctx context.Context) (Fetched, error) {
		if !lapsed.Load() {
			t.Error("exchanged while the lock left behind ran")
		}
		return x.exchange(ctx)
	}
	done := make(chan error, 1)
	go func() {
		_, err := e.Exchange(t.Context(), testUserToken, testTenant, clock.Now().Add(2*time.Hour), exchange)
		done <- err
	}()
	<-lost // the request waits for the lock
	lapsed.Store(true)
	mr.FastForward(3 * e.lockBeat())
	if err := <-done; err != nil || x.calls.Load() != 1 {
		t.Fatalf("with a lock left behind: %v, %d exchanges; want 1 exchange once it lapsed", err, x.calls.Load())
	}
}

// A failure of the application at one tenant (where it is not set up: any
// user token naming that tenant gets there) pauses that tenant's
// exchanges, not the others', and the backoffs kept stay within Tenants.
func TestApplicationFailureAtOneTenantBacksOffThatTenantOnly(t *testing.T) {
	const unprovisioned, third = "cccccccc-0000-4000-8000-cccccccccccc", "dddddddd-0000-4000-8000-dddddddddddd"
	clock := newFakeClock()
	failing := &exchangeCounter{clock: clock, err: &classifiedError{permanent: true}}
	e := newTestExchanger(t, nil, clock, ExchangeOptions{Rejected: rejectUserRejection, Tenants: 2})
	notAfter := clock.Now().Add(time.Hour)
	if _, err := e.Exchange(t.Context(), "crafted.1.sig", unprovisioned, notAfter, failing.exchange); err == nil {
		t.Fatal("a failing exchange succeeded")
	}
	if _, err := e.Exchange(t.Context(), "crafted.2.sig", unprovisioned, notAfter, failing.exchange); err == nil || failing.calls.Load() != 1 {
		t.Fatalf("the failing tenant again: %v after %d exchanges; want its backoff, no exchange", err, failing.calls.Load())
	}
	good := &exchangeCounter{clock: clock}
	if _, err := e.Exchange(t.Context(), testUserToken, testTenant, notAfter, good.exchange); err != nil || good.calls.Load() != 1 {
		t.Fatalf("another tenant's user while one tenant is backed off: %v, %d exchanges; want the exchange", err, good.calls.Load())
	}
	for _, tenant := range []string{third, testTenant, "eeeeeeee-0000-4000-8000-eeeeeeeeeeee"} {
		_, _ = e.Exchange(t.Context(), "crafted."+tenant+".sig", tenant, notAfter, failing.exchange)
	}
	e.mu.Lock()
	kept := len(e.backoffs)
	e.mu.Unlock()
	if kept > 2 {
		t.Errorf("%d backoffs kept, want at most Tenants (2)", kept)
	}
}

// A downstream that answers every request with a claims challenge drops a
// user token's entry once per PurgeInterval, not once per request: 200
// challenged requests within it make one new exchange, not 200.
func TestDropsOfOneUserTokenAreRateLimited(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	e := newTestExchanger(t, nil, clock, ExchangeOptions{})
	x := &exchangeCounter{clock: clock}
	notAfter := clock.Now().Add(2 * time.Hour)
	for i := range 200 {
		if _, err := e.Exchange(t.Context(), testUserToken, testTenant, notAfter, x.exchange); err != nil {
			t.Fatal(err)
		}
		if dropped := e.Drop(t.Context(), testUserToken, ""); dropped != (i == 0) {
			t.Fatalf("drop %d: dropped = %v, want only the first within the interval", i, dropped)
		}
	}
	if n := x.calls.Load(); n != 2 {
		t.Fatalf("200 challenged requests made %d exchanges, want 2 (the first, and one after the drop)", n)
	}
	if !e.Drop(t.Context(), "another.user.token", "") {
		t.Error("another user token's drop was refused: the limit is per user token")
	}
	clock.Advance(DefaultPurgeInterval)
	if !e.Drop(t.Context(), testUserToken, "") {
		t.Fatal("a drop after the interval was refused")
	}
	if _, err := e.Exchange(t.Context(), testUserToken, testTenant, notAfter, x.exchange); err != nil || x.calls.Load() != 3 {
		t.Fatalf("after the interval's drop: %v, %d exchanges; want a new exchange", err, x.calls.Load())
	}
}

// A refusal that arrives late, of a token already replaced here (a
// downstream's answer to a request sent before an earlier drop), keeps the
// newer entry: no exchange for it.
func TestALateRefusalOfAReplacedTokenKeepsTheNewerEntry(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	e := newTestExchanger(t, nil, clock, ExchangeOptions{})
	x := &exchangeCounter{clock: clock}
	notAfter := clock.Now().Add(2 * time.Hour)
	first, err := e.Exchange(t.Context(), testUserToken, testTenant, notAfter, x.exchange)
	if err != nil {
		t.Fatal(err)
	}
	if !e.Drop(t.Context(), testUserToken, first.AccessToken) {
		t.Fatal("the refusal of the current token did not drop it")
	}
	second, err := e.Exchange(t.Context(), testUserToken, testTenant, notAfter, x.exchange)
	if err != nil || second.AccessToken == first.AccessToken {
		t.Fatalf("after the drop: %q, %v; want a new token", second.AccessToken, err)
	}
	clock.Advance(DefaultPurgeInterval)
	if e.Drop(t.Context(), testUserToken, first.AccessToken) {
		t.Error("a late refusal of the replaced token dropped the newer one")
	}
	if got, err := e.Exchange(t.Context(), testUserToken, testTenant, notAfter, x.exchange); err != nil || got.AccessToken != second.AccessToken || x.calls.Load() != 2 {
		t.Errorf("after the late refusal: %v after %d exchanges, want the newer token kept", err, x.calls.Load())
	}
	if !e.Drop(t.Context(), testUserToken, second.AccessToken) {
		t.Error("the refusal of the newer token did not drop it")
	}
}

// Of concurrent drops of one user token, one drops.
func TestConcurrentDropsOfOneUserTokenDropOnce(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	e := newTestExchanger(t, nil, clock, ExchangeOptions{})
	for range 50 {
		var dropped atomic.Int64
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				if e.Drop(t.Context(), testUserToken, "") {
					dropped.Add(1)
				}
			})
		}
		wg.Wait()
		if n := dropped.Load(); n != 1 {
			t.Fatalf("16 concurrent drops dropped %d times, want 1", n)
		}
		clock.Advance(DefaultPurgeInterval)
	}
}

// A Redis writer who records a drop announcement and replays it (after
// deleting the entry) makes a replica forget the entry at most once per
// PurgeInterval, as Drop itself: not one exchange per replay.
func TestReplayedDropAnnouncementsAreRateLimited(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := &fakeClock{now: time.Now()}
	a, b := fleetExchangers(t, mr, clock, true)
	x := &exchangeCounter{clock: clock}
	notAfter := clock.Now().Add(2 * time.Hour)
	markers := 0
	exchange := func(e *Exchanger, userToken string) {
		t.Helper()
		if _, err := e.Exchange(t.Context(), userToken, testTenant, notAfter, x.exchange); err != nil {
			t.Fatal(err)
		}
	}
	exchange(a, testUserToken)
	exchange(b, testUserToken)
	sniffer := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = sniffer.Close() })
	sub := sniffer.PSubscribe(t.Context(), "*:updated")
	if _, err := sub.Receive(t.Context()); err != nil {
		t.Fatal(err)
	}
	a.Drop(t.Context(), testUserToken, "") // the one genuine drop, recorded
	var recorded *redis.Message
	select {
	case recorded = <-sub.Channel():
	case <-time.After(5 * time.Second):
		t.Fatal("no drop announcement seen")
	}
	// replayed publishes n recorded announcements, then has A drop a new
	// marker's entry, and waits until B forgot it: B has handled them all
	// (one channel keeps the order).
	replayed := func(n int) {
		t.Helper()
		markers++
		marker := fmt.Sprintf("marker.user.token%d", markers)
		exchange(b, marker)
		for range n {
			mr.Del(b.key(b.namer.digest(testUserToken)))
			mr.Publish(recorded.Channel, recorded.Payload)
		}
		a.Drop(t.Context(), marker, "")
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(2 * time.Millisecond) {
			if _, found, _ := b.Lookup(marker); !found {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("replica B kept the marker's entry that A dropped")
			}
		}
	}
	replayed(0)
	exchange(b, testUserToken) // after the genuine drop: a new exchange
	before := x.calls.Load()
	replayed(20)
	exchange(b, testUserToken)
	if got := x.calls.Load() - before - 1; got != 0 { // the marker's own exchange
		t.Fatalf("20 replays within PurgeInterval made %d exchanges of the user token, want 0", got)
	}
	clock.Advance(DefaultPurgeInterval)
	before = x.calls.Load()
	replayed(20)
	exchange(b, testUserToken)
	if got := x.calls.Load() - before - 1; got != 1 {
		t.Fatalf("20 replays after PurgeInterval made %d exchanges of the user token, want 1", got)
	}
}

// TestExchangeResultsAreDecidedWhereTheFailureIs: the result an exchange's
// failure reports is decided when the exchange fails, on its own error, so
// a Rejected that does not look through wrapping counts refusals as
// rejected, and the application's failures as failed.
func TestExchangeResultsAreDecidedWhereTheFailureIs(t *testing.T) {
	clock := newFakeClock()
	var results []ExchangeResult
	e := newTestExchanger(t, nil, clock, ExchangeOptions{
		Rejected:   func(err error) (time.Duration, bool) { return time.Hour, err == userRejection },
		OnExchange: func(r ExchangeResult) { results = append(results, r) },
	})
	notAfter := clock.Now().Add(time.Hour)
	rejecting := &exchangeCounter{clock: clock, err: userRejection}
	failing := &exchangeCounter{clock: clock, err: &classifiedError{permanent: true}}
	_, _ = e.Exchange(t.Context(), testUserToken, testTenant, notAfter, rejecting.exchange)
	_, _ = e.Exchange(t.Context(), testOtherUser, testTenant, notAfter, failing.exchange)
	if want := []ExchangeResult{ExchangeRejected, ExchangeFailed}; !slices.Equal(results, want) {
		t.Errorf("results %v, want %v", results, want)
	}
}
