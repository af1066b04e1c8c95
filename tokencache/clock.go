package tokencache

import "time"

// Clock is the time source of a Cache. Now judges token expiry and backoff
// windows; AfterFunc drives the timers of proactive refresh, of background
// retries after a failure and of refresh-lock extension. Tests give a fake
// clock and advance it instead of sleeping.
//
// Waiting for another replica (PollInterval, the pub/sub wakeup) and a
// caller's WaitTimeout always use real time, as do the store's own TTLs.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f, in its own goroutine or the clock's, once d has
	// passed, unless the returned Timer is stopped first.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc call.
type Timer interface {
	// Stop prevents the call if it has not started, reporting whether it did.
	Stop() bool
}

// systemClock is the real clock.
type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }
