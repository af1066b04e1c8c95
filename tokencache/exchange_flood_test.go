package tokencache

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"go.uber.org/zap"
)

// Floods of user tokens anyone can write (each distinct, each refused by
// the token endpoint): the exchanges take at most half of the token
// request slots, wait for one only while a request waits, and are at most
// MaxFlights at once.

// newFloodCache returns a Cache with slots token request slots and an
// Exchanger on it with opts, and a client-credentials handle whose Fetch
// answers at once.
func newFloodCache(t *testing.T, slots int, wait time.Duration, opts ExchangeOptions) (*Exchanger, *Handle) {
	t.Helper()
	clock := newFakeClock()
	c, err := New(Options{Clock: realTimers{clock}, Logger: zap.NewNop(), WaitTimeout: wait, FetchConcurrency: slots})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	opts.Name, opts.Identity, opts.Scopes, opts.Rejected = "graph-as-user", testOBOIdentity, []string{testOBOScope}, rejectUserRejection
	e, err := c.NewExchanger(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	h, err := c.Register(Application{Name: "graph-api", CacheKey: "other\napp", Scopes: []string{"https://graph.microsoft.com/.default"},
		Fetch: func(context.Context) (Fetched, error) {
			return Fetched{AccessToken: "app-token", ExpiresAt: clock.Now().Add(time.Hour)}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	return e, h
}

// The review's burst: 640 crafted tokens, each refused after 300 ms, with
// requests giving up after a second. A client-credentials token is had
// during the burst, the exchanges sent stay within what the exchange
// slots can send while requests wait, and once every request is answered
// a new exchange is not queued behind abandoned ones.
func TestRefusedTokenBurstLeavesClientCredentialsTheirSlots(t *testing.T) {
	const burst, refusal, slots = 640, 300 * time.Millisecond, DefaultFetchConcurrency
	e, h := newFloodCache(t, slots, 5*time.Second, ExchangeOptions{}) // the requests give up after 1 s
	var sent atomic.Int64
	refuse := func(ctx context.Context) (Fetched, error) {
		sent.Add(1)
		select {
		case <-time.After(refusal):
		case <-ctx.Done():
		}
		return Fetched{}, userRejection
	}
	notAfter := newFakeClock().Now().Add(time.Hour)
	started := make(chan struct{}, burst)
	answered := make(chan error, burst)
	for i := range burst {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			started <- struct{}{}
			_, err := e.Exchange(ctx, fmt.Sprintf("crafted.%d.sig", i), testTenant, notAfter, refuse)
			answered <- err
		}()
	}
	for range burst {
		<-started
	}
	t0 := time.Now()
	if _, err := h.Token(context.Background()); err != nil {
		t.Errorf("a client-credentials token during the burst: %v after %s", err, time.Since(t0).Round(time.Millisecond))
	}
	busy := 0
	for range burst {
		if err := <-answered; errors.Is(err, ErrExchangesBusy) {
			busy++
		}
	}
	atAnswer := sent.Load()
	exchangeSlots := int64(slots / 2)
	if most := exchangeSlots * int64(time.Second/refusal+2); atAnswer > most {
		t.Errorf("%d exchanges sent while requests waited, want at most %d (%d exchange slots, %s each, 1 s)",
			atAnswer, most, exchangeSlots, refusal)
	}
	if busy == 0 {
		t.Errorf("no request of %d refused as busy (MaxFlights %d)", burst, e.opts.MaxFlights)
	}
	var fresh atomic.Int64
	ok := func(context.Context) (Fetched, error) {
		fresh.Add(1)
		return Fetched{AccessToken: "downstream-token", ExpiresAt: notAfter}, nil
	}
	if _, err := e.Exchange(context.Background(), testUserToken, testTenant, notAfter, ok); err != nil || fresh.Load() != 1 {
		t.Fatalf("a user's exchange after the burst: %v; want it exchanged, not queued behind abandoned ones", err)
	}
	if after := sent.Load(); after > atAnswer+exchangeSlots {
		t.Errorf("%d crafted exchanges sent after every crafted request was answered, want at most the %d holding slots",
			after-atAnswer, exchangeSlots)
	}
	t.Logf("burst of %d: %d exchanges sent, %d refused as busy", burst, atAnswer, busy)
}

// blockingExchange is an exchange function that tells entered when called
// and answers once release is closed.
func blockingExchange(entered chan<- string, release <-chan struct{}, calls *atomic.Int64, name string) FetchFunc {
	return func(context.Context) (Fetched, error) {
		calls.Add(1)
		entered <- name
		<-release
		return Fetched{AccessToken: "downstream-" + name, ExpiresAt: newFakeClock().Now().Add(2 * time.Hour)}, nil
	}
}

// Exchanges hold at most half of the slots: with them all taken, a
// client-credentials token is still had.
func TestExchangesTakeAtMostHalfTheSlots(t *testing.T) {
	e, h := newFloodCache(t, 4, 5*time.Second, ExchangeOptions{})
	entered, release := make(chan string, 8), make(chan struct{})
	defer close(release)
	var calls atomic.Int64
	notAfter := newFakeClock().Now().Add(3 * time.Hour)
	for i := range 4 {
		go func() {
			name := fmt.Sprint(i)
			_, _ = e.Exchange(context.Background(), "user."+name+".sig", testTenant, notAfter, blockingExchange(entered, release, &calls, name))
		}()
	}
	<-entered
	<-entered // the exchange slots (2 of 4) are taken
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := h.Token(ctx); err != nil {
		t.Fatalf("a client-credentials token while exchanges hold their slots: %v", err)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("%d exchanges running with 4 slots, want 2 (half)", n)
	}
}

// A flight whose requests all left never sends its exchange.
func TestAbandonedExchangeIsNotSent(t *testing.T) {
	e, _ := newFloodCache(t, 2, 5*time.Second, ExchangeOptions{}) // one exchange slot
	entered, release := make(chan string, 4), make(chan struct{})
	var calls atomic.Int64
	notAfter := newFakeClock().Now().Add(3 * time.Hour)
	first := make(chan error, 1)
	go func() {
		_, err := e.Exchange(context.Background(), "user.holder.sig", testTenant, notAfter, blockingExchange(entered, release, &calls, "holder"))
		first <- err
	}()
	<-entered // holds the only exchange slot
	var abandonedCalls atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan error, 1)
	go func() {
		_, err := e.Exchange(ctx, "user.abandoned.sig", testTenant, notAfter, func(context.Context) (Fetched, error) {
			abandonedCalls.Add(1)
			return Fetched{AccessToken: "downstream-abandoned", ExpiresAt: notAfter}, nil
		})
		gaveUp <- err
	}()
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Fatalf("the abandoned request: %v, want its cancellation", err)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	// The next exchange gets the slot after any flight queued before it:
	// the abandoned one, had it waited on.
	next := func(context.Context) (Fetched, error) {
		return Fetched{AccessToken: "downstream-next", ExpiresAt: notAfter}, nil
	}
	if _, err := e.Exchange(context.Background(), testUserToken, testTenant, notAfter, next); err != nil {
		t.Fatal(err)
	}
	if n := abandonedCalls.Load(); n != 0 {
		t.Errorf("the exchange of a request that left was sent (%d), want none", n)
	}
}

// Distinct exchanges in flight are at most MaxFlights: one more is refused
// at once with a Retry-After; a request joining a running one is not.
func TestExchangesInFlightAreCapped(t *testing.T) {
	e, _ := newFloodCache(t, 0, 5*time.Second, ExchangeOptions{MaxFlights: 2})
	entered, release := make(chan string, 4), make(chan struct{})
	var calls atomic.Int64
	notAfter := newFakeClock().Now().Add(3 * time.Hour)
	done := make(chan error, 2)
	for _, name := range []string{"a", "b"} {
		go func() {
			_, err := e.Exchange(context.Background(), "user."+name+".sig", testTenant, notAfter, blockingExchange(entered, release, &calls, name))
			done <- err
		}()
	}
	<-entered
	<-entered
	_, err := e.Exchange(context.Background(), "user.c.sig", testTenant, notAfter, blockingExchange(entered, release, &calls, "c"))
	var te *Error
	if !errors.As(err, &te) || !errors.Is(err, ErrExchangesBusy) || te.RetryAfter != ExchangesBusyRetry || te.Permanent {
		t.Fatalf("a third distinct exchange with MaxFlights 2: %v; want ErrExchangesBusy with a Retry-After", err)
	}
	d := e.namer.digest("user.a.sig")
	if f, led, err := e.join(d, nil); err != nil || led {
		t.Errorf("a request joining a running exchange at the cap: led %v, %v; want it joined", led, err)
	} else {
		e.leave(d, f)
	}
	close(release)
	for range 2 {
		if err := <-done; err != nil {
			t.Errorf("an exchange within the cap: %v", err)
		}
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("%d exchanges, want 2", n)
	}
	if _, err := e.Exchange(context.Background(), "user.c.sig", testTenant, notAfter, blockingExchange(entered, release, &calls, "c")); err != nil {
		t.Errorf("after the flights ended: %v", err)
	}
}

// Requests that left before their exchange began (anyone can send user
// tokens and hang up) start no flight: no store call and no exchange,
// however many, though MaxFlights counts only flights a request waits for.
func TestExchangesOfRequestsThatLeftMakeNoStoreCalls(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := &fakeClock{now: time.Now()}
	spy := &spyStore{Store: patientStore(t, mr, fleetSealKeys)}
	e := fleetExchangerWaiting(t, spy, clock, 5*time.Second)
	if !e.Shared() {
		t.Fatal("the exchanger does not share through the store")
	}
	var sent atomic.Int64
	exchange := func(context.Context) (Fetched, error) {
		sent.Add(1)
		return Fetched{AccessToken: "downstream-token", ExpiresAt: clock.Now().Add(time.Hour)}, nil
	}
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	before := runtime.NumGoroutine()
	for i := range 200 {
		_, err := e.Exchange(gone, fmt.Sprintf("user.crafted%d.sig", i), testTenant, clock.Now().Add(2*time.Hour), exchange)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("request %d: %v, want its cancellation", i, err)
		}
	}
	// A flight started anyway would read the store: let any end first.
	for deadline := time.Now().Add(10 * time.Second); runtime.NumGoroutine() > before && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if n := spy.calls.Load(); n != 0 {
		t.Errorf("%d store calls for requests that had left, want none", n)
	}
	if n := sent.Load(); n != 0 {
		t.Errorf("%d exchanges sent for requests that had left, want none", n)
	}
}

// gatedStore holds its first Get until release is closed, and counts
// TryLock calls.
type gatedStore struct {
	Store
	entered, release chan struct{}
	once             sync.Once
	locks            atomic.Int64
}

func (s *gatedStore) Get(ctx context.Context, key string) (*Record, error) {
	s.once.Do(func() {
		close(s.entered)
		<-s.release
	})
	return s.Store.Get(ctx, key)
}

func (s *gatedStore) TryLock(ctx context.Context, lockKey string, ttl time.Duration) (string, bool, error) {
	s.locks.Add(1)
	return s.Store.TryLock(ctx, lockKey, ttl)
}

// A flight whose last request leaves during its first store read stops
// there: it neither takes the lock nor reads again.
func TestAFlightWhoseRequestsLeftTakesNoLock(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := &fakeClock{now: time.Now()}
	store := &gatedStore{Store: patientStore(t, mr, fleetSealKeys), entered: make(chan struct{}), release: make(chan struct{})}
	e := fleetExchangerWaiting(t, store, clock, 5*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	left := make(chan error, 1)
	go func() {
		_, err := e.Exchange(ctx, testUserToken, testTenant, clock.Now().Add(2*time.Hour), func(context.Context) (Fetched, error) {
			return Fetched{AccessToken: "downstream-token", ExpiresAt: clock.Now().Add(time.Hour)}, nil
		})
		left <- err
	}()
	<-store.entered // the flight reads the store
	e.flightsMu.Lock()
	f := e.flights[e.namer.digest(testUserToken)]
	e.flightsMu.Unlock()
	cancel()
	if err := <-left; !errors.Is(err, context.Canceled) {
		t.Fatalf("the request: %v, want its cancellation", err)
	}
	close(store.release)
	<-f.done
	if !errors.Is(f.err, errGone) {
		t.Errorf("the flight ended with %v, want errGone", f.err)
	}
	if n := store.locks.Load(); n != 0 {
		t.Errorf("the flight tried the lock %d times after its requests left, want none", n)
	}
}
