package tokencache

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"go.uber.org/zap"
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

// A backoff a Redis writer planted larger than any replica writes is
// ignored, and warned of once an hour, not at each read (each exchange
// reads it twice), and again once a backoff there read within bounds: the
// writer and the clients sending distinct tokens must not set the
// warnings' rate.
func TestAPlantedExchangeBackoffIsWarnedOfOnceAnHour(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	store := patientStore(t, mr, fleetSealKeys)
	c, _, logs := newClockCache(t, store, clock, Options{})
	e := fleetExchanger(t, c.Cache)
	plant := func() {
		t.Helper()
		if err := mr.Set(e.backoffKey(testTenant), strings.Repeat("m", MaxBackoffBytes+1)); err != nil {
			t.Fatal(err)
		}
	}
	x := &exchangeCounter{clock: clock}
	exchanges := 0
	exchange := func(n int) {
		t.Helper()
		for range n {
			exchanges++
			token := fmt.Sprintf("user-token-%d", exchanges)
			if _, err := e.Exchange(t.Context(), token, testTenant, clock.Now().Add(2*time.Hour), x.exchange); err != nil {
				t.Fatal(err)
			}
		}
	}
	warnings := func() int {
		return logs.FilterMessageSnippet("larger than any replica writes").FilterLevelExact(zap.WarnLevel).Len()
	}
	plant()
	exchange(20)
	if n := warnings(); n != 1 {
		t.Errorf("20 exchanges with a planted oversized backoff: %d warnings, want 1", n)
	}
	if n := logs.FilterMessageSnippet("larger than any replica writes").Len(); n < 20 {
		t.Errorf("%d logs of the planted backoff in all, want one at each read (the repeats at debug)", n)
	}
	if n := x.calls.Load(); n != 20 {
		t.Errorf("%d exchanges, want 20: the planted backoff pauses none", n)
	}
	ended := &Backoff{Until: clock.Now().Add(-time.Second), Attempts: 1} // one a replica writes, ended
	if err := store.SetBackoff(t.Context(), e.backoffKey(testTenant), ended, time.Minute); err != nil {
		t.Fatal(err)
	}
	exchange(1)
	plant()
	exchange(5)
	if n := warnings(); n != 2 {
		t.Errorf("planted again after a backoff read within bounds: %d warnings in all, want 2", n)
	}
	// A later episode, with nothing read within bounds between (an empty
	// key clears nothing), is warned of again once the hour has passed.
	clock.Advance(tamperWarningInterval)
	plant()
	exchange(2)
	if n := warnings(); n != 3 {
		t.Errorf("planted still an hour later: %d warnings in all, want 3", n)
	}
}

// A success does not end the fleet's pause of the tenant: exchanges of
// other users run at once on other replicas, and one sent before another
// replica's 429 must not end the pause that 429 wrote (review 18).
func TestASuccessSentBeforeAnotherReplicasThrottlingKeepsItsPause(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := &fakeClock{now: time.Now()}
	a := fleetExchangerWaiting(t, patientStore(t, mr, fleetSealKeys), clock, DefaultWaitTimeout)
	b := fleetExchangerWaiting(t, patientStore(t, mr, fleetSealKeys), clock, DefaultWaitTimeout)
	notAfter := clock.Now().Add(2 * time.Hour)
	throttled := &exchangeCounter{clock: clock, err: &classifiedError{retryAfter: 30 * time.Second}}
	if _, err := a.Exchange(t.Context(), testUserToken, testTenant, notAfter, throttled.exchange); err == nil {
		t.Fatal("a throttled exchange succeeded")
	}
	clock.Advance(31 * time.Second)
	mr.FastForward(31 * time.Second) // the old pause is over everywhere
	if mr.Exists(a.backoffKey(testTenant)) {
		t.Fatal("old pause still in the store")
	}
	sent, release := make(chan struct{}), make(chan struct{})
	slow := func(context.Context) (Fetched, error) {
		close(sent)
		<-release
		return Fetched{AccessToken: "downstream-token-slow", ExpiresAt: clock.Now().Add(time.Hour)}, nil
	}
	done := make(chan error, 1)
	go func() {
		_, err := a.Exchange(context.Background(), testOtherUser, testTenant, notAfter, slow)
		done <- err
	}()
	<-sent // A's exchange is on its way to Entra
	third := "eyJhbGciOiJSUzI1NiJ9.eyJvaWQiOiJ1c2VyLTMiLCJ0aWQiOiJ0LTEifQ.c2lnbmF0dXJlLW9mLXVzZXItMw"
	if _, err := b.Exchange(t.Context(), third, testTenant, notAfter, throttled.exchange); err == nil {
		t.Fatal("B's throttled exchange succeeded")
	}
	if !mr.Exists(a.backoffKey(testTenant)) {
		t.Fatal("B's throttle wrote no fleet pause")
	}
	close(release) // A's exchange, sent before B's 429, answers now
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !mr.Exists(a.backoffKey(testTenant)) {
		t.Error("A's success, sent before B was throttled, deleted the fleet's newer pause (Retry-After 30 s): every replica exchanges at the throttled tenant again")
	}
}
