package tokencache

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// signalOnce sends on ch without blocking: a test's spyStore.onLockLost.
func signalOnce(ch chan struct{}) func() {
	return func() {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Entra throttles an exchange (429, Retry-After 30 s): the holder shares
// the backoff through the store before it wakes the replica waiting for
// its lock, which answers with the pause instead of sending the same
// exchange again, and a third replica pauses that tenant's other users
// without sending theirs, as client credentials do.
func TestThrottledExchangeIsSentOnceByTheFleet(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := &fakeClock{now: time.Now()}
	lost := make(chan struct{}, 1)
	a := fleetExchangerWaiting(t, patientStore(t, mr, fleetSealKeys), clock, DefaultWaitTimeout)
	b := fleetExchangerWaiting(t, &spyStore{Store: patientStore(t, mr, fleetSealKeys), onLockLost: signalOnce(lost)}, clock, DefaultWaitTimeout)
	c := fleetExchangerWaiting(t, patientStore(t, mr, fleetSealKeys), clock, DefaultWaitTimeout)
	var calls atomic.Int64
	entered, release := make(chan struct{}, 3), make(chan struct{})
	throttled := func(context.Context) (Fetched, error) {
		calls.Add(1)
		entered <- struct{}{}
		<-release
		return Fetched{}, &classifiedError{retryAfter: 30 * time.Second}
	}
	notAfter := clock.Now().Add(2 * time.Hour)
	var errA, errB error
	var wg sync.WaitGroup
	wg.Go(func() { _, errA = a.Exchange(context.Background(), testUserToken, testTenant, notAfter, throttled) })
	<-entered // a holds the lock and exchanges
	wg.Go(func() { _, errB = b.Exchange(context.Background(), testUserToken, testTenant, notAfter, throttled) })
	<-lost // b waits for a's lock
	close(release)
	wg.Wait()
	_, errC := c.Exchange(t.Context(), testOtherUser, testTenant, notAfter, throttled)
	if n := calls.Load(); n != 1 {
		t.Errorf("%d exchanges within Entra's Retry-After; want 1", n)
	}
	for name, err := range map[string]error{"holder": errA, "replica waiting for its lock": errB, "another replica": errC} {
		var te *Error
		if !errors.As(err, &te) || te.Permanent || te.RetryAfter < 29*time.Second {
			t.Errorf("%s: %v; want the pause of Entra's Retry-After (30 s)", name, err)
		}
	}
}

// A backoff a Redis writer plants under an exchange backoff key pauses
// exchanges no more than a refresh's: one running longer than any replica
// writes is ignored, and one marked permanent (no replica shares one)
// pauses as a transient one, with Retry-After.
func TestPlantedExchangeBackoffIsBoundedAsARefreshBackoff(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := &fakeClock{now: time.Now()}
	writer := patientStore(t, mr, fleetSealKeys)
	e := fleetExchangerWaiting(t, patientStore(t, mr, fleetSealKeys), clock, DefaultWaitTimeout)
	x := &exchangeCounter{clock: clock}
	notAfter := clock.Now().Add(2 * time.Hour)
	plant := func(b Backoff) {
		t.Helper()
		if err := writer.SetBackoff(t.Context(), e.backoffKey(testTenant), &b, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	plant(Backoff{Until: clock.Now().Add(maxRetryAfter + maxClockSkew + time.Second), Attempts: 1})
	if _, err := e.Exchange(t.Context(), testUserToken, testTenant, notAfter, x.exchange); err != nil || x.calls.Load() != 1 {
		t.Fatalf("with a backoff longer than any replica writes: %v, %d exchanges; want it ignored", err, x.calls.Load())
	}
	plant(Backoff{Until: clock.Now().Add(time.Minute), Permanent: true, Attempts: 1})
	_, err := e.Exchange(t.Context(), testOtherUser, testTenant, notAfter, x.exchange)
	var te *Error
	if !errors.As(err, &te) || te.Permanent || te.RetryAfter != time.Minute || x.calls.Load() != 1 {
		t.Fatalf("with a planted permanent backoff of a minute: %v, %d exchanges; want a minute's transient pause, no exchange", err, x.calls.Load())
	}
}

// A permanent failure (a wrong secret) pauses only the replica that saw
// it: exchanges name no credential, and a replica whose credential was
// rotated must not be held back by another's old one.
func TestPermanentExchangeFailureIsNotShared(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := &fakeClock{now: time.Now()}
	a, b := fleetExchangers(t, mr, clock, true)
	notAfter := clock.Now().Add(2 * time.Hour)
	failing := &exchangeCounter{clock: clock, err: &classifiedError{permanent: true}}
	if _, err := a.Exchange(t.Context(), testUserToken, testTenant, notAfter, failing.exchange); err == nil {
		t.Fatal("a failing exchange succeeded")
	}
	good := &exchangeCounter{clock: clock}
	if _, err := b.Exchange(t.Context(), testOtherUser, testTenant, notAfter, good.exchange); err != nil || good.calls.Load() != 1 {
		t.Fatalf("another replica after a permanent failure: %v, %d exchanges; want its exchange", err, good.calls.Load())
	}
}
