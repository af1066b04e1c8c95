package tokencache

import (
	"fmt"
	"time"
)

// FetchError is what a Fetch error (found with errors.As) tells the cache
// about retrying: its backoff, whether the fleet shares it, and the
// FetchResult reported to OnFetch. Other errors are transient failures.
type FetchError interface {
	error
	// PermanentFailure reports whether retrying cannot help until the
	// configuration changes (a wrong secret): a longer backoff, and
	// Error.Permanent.
	PermanentFailure() bool
	// RetryAfterHint is the delay the endpoint asked for (Retry-After), 0
	// for none: the backoff is never shorter (up to 10 minutes).
	RetryAfterHint() time.Duration
	// HTTPStatus is the status of the endpoint's answer, 0 for none (not
	// sent, or no answer): such a failure's backoff is not shared.
	HTTPStatus() int
}

// FetchResult classifies a call of Fetch, as the backoff does.
type FetchResult string

// Fetch results.
const (
	FetchSucceeded FetchResult = "success"
	FetchThrottled FetchResult = "throttled" // not permanent, with a RetryAfterHint
	// FetchTransient: any other failure, one that was not sent or got no
	// answer and a token the cache refused (expiring within RefreshWindow).
	FetchTransient FetchResult = "transient_error"
	FetchPermanent FetchResult = "permanent_error" // FetchError's PermanentFailure
)

// FetchOutcome is how one call of an Application's Fetch ended, given to
// its OnFetch.
type FetchOutcome struct {
	Result   FetchResult
	Duration time.Duration // how long Fetch took
	// Err is nil on success, else the Fetch's error or the cache's reason
	// to refuse its token. It holds no token or secret.
	Err error
}

// Error is the failure of Token or Refresh: no token could be had. The
// caller decides how to answer it. Message says what happened and is safe
// to show a client (no token, no secret); Err is the cause, for errors.Is
// and errors.As (the Fetch's error, ErrPaused, ErrClosed, a context error).
type Error struct {
	Message string
	Err     error
	// RetryAfter, when positive, is how long until token requests resume:
	// while the fleet is backed off after a throttled or transient failure
	// (a Retry-After from the token endpoint, or the backoff's), or once
	// the Cache is closed. Zero otherwise.
	RetryAfter time.Duration
	// Permanent reports that retrying will not help until the
	// configuration changes (a wrong secret): see FetchError.
	Permanent bool
}

// Error returns the message.
func (e *Error) Error() string { return e.Message }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// requestError returns an *Error saying what happened, with its cause.
func requestError(cause error, format string, args ...any) *Error {
	return &Error{Message: fmt.Sprintf(format, args...), Err: cause}
}
