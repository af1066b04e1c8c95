package tokencache

import "time"

// Clock is a Cache's time source for expiry, backoff and its timers (a
// fake one in tests). Waits for other replicas and WaitTimeout use real
// time, as do the store's TTLs.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f once d has passed unless the Timer is stopped.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc call.
type Timer interface {
	Stop() bool
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }
