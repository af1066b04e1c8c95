package tokencache

import (
	"context"
	"errors"
	"time"
)

// One exchange per user token runs at a time in a process (a flight),
// concurrent requests joining it. A flight whose last request left gives
// up before it sends its exchange (once sent, its token is kept).

// ExchangesBusyRetry is the RetryAfter of an Exchange refused with
// ErrExchangesBusy.
const ExchangesBusyRetry = time.Second

// ErrExchangesBusy is the cause of an Exchange refused because
// ExchangeOptions.MaxFlights exchanges are in flight.
var ErrExchangesBusy = errors.New("tokencache: too many token exchanges in flight")

// errGone ends a flight no request waits for: nobody reads it.
var errGone = errors.New("tokencache: no request waits for the exchange")

func errCallersGone(name string) error {
	return requestError(errGone, "no request waits for the exchange of application %q", name)
}

// exchangeCall is what a flight exchanges: the entry d, under key in the
// store; waiting ends when the flight's last request has left.
type exchangeCall struct {
	d         entryDigest
	key       string
	userToken string
	tenant    string
	notAfter  time.Time
	exchange  FetchFunc
	waiting   context.Context
}

// exchangeFlight is one flight: done is closed when val and err are set.
type exchangeFlight struct {
	done    chan struct{}
	val     exchanged
	err     error
	waiters int                // requests waiting for it, under Exchanger.flightsMu
	stop    context.CancelFunc // ends waiting
}

// join makes the caller wait for the flight of d: the running one, else a
// new one running run (led), unless MaxFlights are in flight. The caller
// calls leave when it stops waiting.
func (e *Exchanger) join(d entryDigest, run func(waiting context.Context) (exchanged, error)) (f *exchangeFlight, led bool, err error) {
	e.flightsMu.Lock()
	defer e.flightsMu.Unlock()
	if f := e.flights[d]; f != nil && f.waiters > 0 {
		f.waiters++
		return f, false, nil
	}
	if len(e.flights) >= e.opts.MaxFlights {
		busy := requestError(ErrExchangesBusy, "too many token exchanges in flight for application %q (%d); retry later",
			e.opts.Name, e.opts.MaxFlights)
		busy.RetryAfter = ExchangesBusyRetry
		return nil, false, busy
	}
	waiting, stop := context.WithCancel(context.Background())
	f = &exchangeFlight{done: make(chan struct{}), waiters: 1, stop: stop}
	e.flights[d] = f
	go func() {
		defer close(f.done)
		f.val, f.err = run(waiting)
		stop()
	}()
	return f, true, nil
}

// leave says the caller stopped waiting for f: the last one ends f's
// waiting, and f no longer counts against MaxFlights.
func (e *Exchanger) leave(d entryDigest, f *exchangeFlight) {
	e.flightsMu.Lock()
	defer e.flightsMu.Unlock()
	if f.waiters--; f.waiters > 0 {
		return
	}
	f.stop()
	if e.flights[d] == f {
		delete(e.flights, d)
	}
}
