package tokencache

import (
	"net/http"
	"time"
)

// FetchError is what a Fetch error (found with errors.As) tells the cache
// about retrying: its backoff, whether the fleet shares it, and the
// FetchResult reported to OnFetch. Other errors are transient failures.
type FetchError interface {
	error
	// PermanentFailure reports whether retrying cannot help until the
	// configuration changes (a wrong secret): a longer backoff, and 502.
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

// Error codes, the same as better-auth-client-credential's.
const (
	// CodeApplicationNotFound: the application name is not configured (404).
	CodeApplicationNotFound = "MICROSOFT_APPLICATION_NOT_FOUND"
	// CodeProviderNotConfigured: no Entra provider is configured (500).
	CodeProviderNotConfigured = "MICROSOFT_PROVIDER_NOT_CONFIGURED"
	// CodeProviderInvalidConfig: tenant, client or credential missing or malformed (500).
	CodeProviderInvalidConfig = "MICROSOFT_PROVIDER_INVALID_CONFIG"
	// CodeTokenRequestFailed: no valid token could be had from the token endpoint (502).
	CodeTokenRequestFailed = "MICROSOFT_TOKEN_REQUEST_FAILED"
)

// Error is a failure with one of the package's codes. Message is safe to show
// a client: it never carries a token or a secret. Err is the cause, reachable
// with errors.Is and errors.As.
type Error struct {
	Code    string
	Status  int
	Message string
	Err     error
	// RetryAfter, when positive, is how long until token requests resume:
	// set with Status 503 while the fleet is throttled (a Retry-After from
	// the token endpoint, or the backoff after a transient failure), so a
	// handler can send a Retry-After header. Zero otherwise.
	RetryAfter time.Duration
}

// NewError returns an Error whose Status is StatusForCode(code).
func NewError(code, message string, cause error) *Error {
	return &Error{Code: code, Status: StatusForCode(code), Message: message, Err: cause}
}

// Error returns "CODE: message".
func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// StatusForCode returns the HTTP status of a code: 404 for
// CodeApplicationNotFound, 502 for CodeTokenRequestFailed, and 500 for the
// other codes and for unknown ones. A throttled CodeTokenRequestFailed is
// 503 (see Error.RetryAfter); use Error.Status, not this, to answer.
func StatusForCode(code string) int {
	switch code {
	case CodeApplicationNotFound:
		return http.StatusNotFound
	case CodeTokenRequestFailed:
		return http.StatusBadGateway
	default:
		return http.StatusInternalServerError
	}
}
