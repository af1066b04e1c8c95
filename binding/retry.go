package binding

import "time"

// A failed background request (a tenant's resolution, the Redis token) is
// asked again after retryFirst, doubling up to retryMax, or after a longer
// hint (Retry-After) up to retryMax; callers in between get the failure.
const (
	retryFirst = time.Second
	retryMax   = time.Minute
)

// now is the backoffs' clock; tests move it.
var now = time.Now

// retry is a request that runs one at a time: the one in flight and the
// failure state; its owner's lock guards it.
type retry struct {
	running chan struct{} // closed when the request in flight ends; nil when none
	err     error         // the last failure, nil after a success
	retryAt time.Time     // no request before it after a failure
	wait    time.Duration
	failed  int // failures in a row
}

// start returns the request in flight, starting request (which ends with
// fail or succeed, then closes done) in a goroutine of its own, not bound
// to the caller that needed it, unless a failure's backoff runs: then nil.
func (b *retry) start(request func(done chan struct{})) chan struct{} {
	if _, _, backingOff := b.waiting(); b.running == nil && !backingOff {
		b.running = make(chan struct{})
		go request(b.running)
	}
	return b.running
}

// fail ends the request in flight with err and starts the next backoff, at
// least hint.
func (b *retry) fail(err error, hint time.Duration) {
	b.running = nil
	b.failed++
	b.wait = max(min(max(2*b.wait, retryFirst), retryMax), min(hint, retryMax))
	b.err, b.retryAt = err, now().Add(b.wait)
}

// succeed ends the request in flight, clears the failures and returns how
// many there were in a row.
func (b *retry) succeed() (failedBefore int) {
	failedBefore = b.failed
	*b = retry{}
	return failedBefore
}

// waiting returns the failure and the time left while a backoff runs (ok).
func (b *retry) waiting() (err error, left time.Duration, ok bool) {
	left = b.retryAt.Sub(now())
	return b.err, left, b.err != nil && left > 0
}
