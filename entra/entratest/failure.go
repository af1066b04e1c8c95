package entratest

import (
	"context"
	"time"
)

// Failure describes how a token request queued by Emulator.FailNext fails.
type Failure struct {
	// Status is the HTTP status. Default 400.
	Status int

	// Body is the raw response body. When empty, one is built in Entra's
	// format from Error, Description and ErrorCodes, with a fresh trace_id,
	// correlation_id and timestamp.
	Body string

	// ContentType is the Content-Type of the response. Default
	// "application/json; charset=utf-8".
	ContentType string

	// Error is the "error" field, e.g. "invalid_client". Default
	// "temporarily_unavailable" for 429 and 5xx statuses, else
	// "invalid_request".
	Error string

	// Description is the start of "error_description"; "AADSTS{code}: " is
	// prefixed when ErrorCodes is set and Description does not start with
	// "AADSTS". Default "Emulated failure.".
	Description string

	// ErrorCodes is the "error_codes" field (AADSTS numbers). Default none.
	ErrorCodes []int

	// SubError is the "suberror" field (e.g. "consent_required",
	// "basic_action"). Default none.
	SubError string

	// Claims is the "claims" field: a claims challenge, JSON. Default none.
	Claims string

	// Delay is how long to wait before answering. A request cancelled while
	// waiting gets no answer.
	Delay time.Duration

	// RetryAfter is the Retry-After header value (e.g. "30" or an HTTP-date);
	// no header when empty.
	RetryAfter string
}

// sleep waits for d or until ctx is done, and reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}
