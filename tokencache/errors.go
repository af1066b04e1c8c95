package tokencache

import (
	"fmt"
	"time"
)

// FetchError is what a Fetch error (found with errors.As) tells the cache
// about retrying. Other errors are transient failures.
type FetchError interface {
	error
	// PermanentFailure reports whether retrying cannot help until the
	// configuration changes (a wrong secret).
	PermanentFailure() bool
	// RetryAfterHint is the endpoint's Retry-After, 0 for none: the backoff
	// is never shorter (up to 10 minutes).
	RetryAfterHint() time.Duration
	// HTTPStatus is the endpoint's answer, 0 for none: such a failure's
	// backoff is not shared.
	HTTPStatus() int
}

// FetchResult classifies a call of Fetch, as the backoff does.
type FetchResult string

// Fetch results.
const (
	FetchSucceeded FetchResult = "success"
	FetchThrottled FetchResult = "throttled"       // not permanent, with a RetryAfterHint
	FetchTransient FetchResult = "transient_error" // any other failure, or a token refused
	FetchPermanent FetchResult = "permanent_error" // FetchError's PermanentFailure
)

// FetchOutcome is how one call of an Application's Fetch ended, for OnFetch.
type FetchOutcome struct {
	Result   FetchResult
	Duration time.Duration
	Err      error // the Fetch's or the cache's refusal; no token or secret
}

// Error is the failure of Token or Refresh: no token could be had. Message
// is safe to show a client; Err is the cause (the Fetch's error, ErrPaused,
// ErrClosed, a context error). The caller decides how to answer it.
type Error struct {
	Message string
	Err     error
	// RetryAfter, when positive, is how long until token requests resume
	// (a throttled or transient backoff, or a closed Cache).
	RetryAfter time.Duration
	// Permanent: retrying will not help until the configuration changes.
	Permanent bool
}

func (e *Error) Error() string { return e.Message }
func (e *Error) Unwrap() error { return e.Err }

// paused says when retrying helps: never (permanent), else after wait.
func (e *Error) paused(permanent bool, wait time.Duration) *Error {
	e.Permanent = permanent
	if !permanent {
		e.RetryAfter = wait
	}
	return e
}

func requestError(cause error, format string, args ...any) *Error {
	return &Error{Message: fmt.Sprintf(format, args...), Err: cause}
}
