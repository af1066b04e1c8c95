package entra

import (
	"errors"
	"strconv"
	"strings"
	"time"
)

// Causes found in RequestError.Err; test them with errors.Is.
var (
	// ErrMalformedResponse means the token endpoint answered, but not with a
	// usable token response (not JSON, a field missing or of the wrong type).
	ErrMalformedResponse = errors.New("entra: malformed token response")

	// ErrResponseTooLarge means the response body exceeded MaxResponseBytes.
	ErrResponseTooLarge = errors.New("entra: token response exceeds 1 MiB")

	// ErrNoScope means Client.Token was called without any scope.
	ErrNoScope = errors.New("entra: at least one scope is required")

	// ErrOnBehalfOf means Client.OnBehalfOf could not make the exchange:
	// the client cannot (see Client.SupportsOnBehalfOf), or it was given no
	// user assertion. It is permanent.
	ErrOnBehalfOf = errors.New("entra: on-behalf-of exchange not possible")
)

// Limits on what is kept of the endpoint's error fields, so that a hostile or
// broken endpoint cannot flood logs or error bodies.
const (
	maxDescriptionLen = 400
	maxIdentifierLen  = 128
	maxErrorCodes     = 8
	maxClaimsLen      = 4096
)

// RequestError is any failed token request: a network error or timeout, an
// error answer from the endpoint, or a response that is not a usable token.
// Its message never contains the client secret, an access token or the
// request body.
type RequestError struct {
	// StatusCode is the HTTP status of the response; 0 when there was no
	// response (network error, timeout).
	StatusCode int
	// Code is the endpoint's "error" field, e.g. "invalid_client".
	Code string
	// Description is the first line of "error_description" (Entra starts it
	// with the AADSTS code), control characters removed, at most 400 bytes.
	Description string
	// ErrorCodes are the "error_codes" (AADSTS numbers), e.g. [7000215].
	ErrorCodes []int
	// TraceID is the endpoint's "trace_id" (or the x-ms-request-id header).
	TraceID string
	// CorrelationID is the endpoint's "correlation_id" (or the
	// client-request-id header).
	CorrelationID string
	// SubError is Entra's "suberror", e.g. "consent_required",
	// "basic_action".
	SubError string
	// Claims is the "claims" of the answer, compact JSON: the claims
	// challenge a user must satisfy (conditional access, MFA) for an
	// on-behalf-of exchange to succeed. "" when absent, not a JSON object,
	// longer than 4 KiB or holding a secret.
	Claims string
	// RetryAfter is the delay asked for by the Retry-After header
	// (delta-seconds or HTTP-date), as sent; 0 when absent.
	RetryAfter time.Duration
	// Err is the underlying cause: a network error, ErrMalformedResponse,
	// ErrResponseTooLarge, ... Nil when the endpoint's error answer says it all.
	Err error
	// OnBehalfOf is set on the failures of Client.OnBehalfOf: an
	// invalid_grant there is about the user's token (see UserFailure).
	OnBehalfOf bool
}

// Error returns a one-line message led by Summary, followed by the details
// an operator looks the failure up with, e.g.
//
//	entra: token request failed: invalid client secret (AADSTS7000215): status 401: invalid_client: Invalid client secret provided. ... trace_id=... correlation_id=...
func (e *RequestError) Error() string {
	var b strings.Builder
	b.WriteString("entra: token request failed")
	summary := e.Summary()
	var cause string
	if e.Err != nil {
		cause = strings.TrimPrefix(e.Err.Error(), "entra: ")
	}
	// The cause need not repeat the summary ("malformed token response: ...").
	cause = strings.TrimPrefix(cause, summary+": ")
	b.WriteString(": ")
	b.WriteString(summary)
	if e.StatusCode != 0 {
		b.WriteString(": status ")
		b.WriteString(strconv.Itoa(e.StatusCode))
	}
	if e.Code != "" {
		b.WriteString(": ")
		b.WriteString(e.Code)
	}
	// AADSTS codes not already named by the summary.
	var codes []string
	for _, code := range e.ErrorCodes {
		if name := "AADSTS" + strconv.Itoa(code); !strings.Contains(summary, name) {
			codes = append(codes, name)
		}
	}
	if len(codes) > 0 {
		b.WriteString(" (")
		b.WriteString(strings.Join(codes, ", "))
		b.WriteString(")")
	}
	if desc := trimAADSTSPrefix(e.Description, e.ErrorCodes); desc != "" {
		b.WriteString(": ")
		b.WriteString(desc)
	}
	if cause != "" {
		b.WriteString(": ")
		b.WriteString(cause)
	}
	if e.RetryAfter > 0 {
		b.WriteString(" retry_after=")
		b.WriteString(e.RetryAfter.String())
	}
	if e.TraceID != "" {
		b.WriteString(" trace_id=")
		b.WriteString(e.TraceID)
	}
	if e.CorrelationID != "" {
		b.WriteString(" correlation_id=")
		b.WriteString(e.CorrelationID)
	}
	return b.String()
}

// Unwrap returns Err.
func (e *RequestError) Unwrap() error { return e.Err }

// trimAADSTSPrefix drops a leading "AADSTSnnn: " when the code is already
// listed in ErrorCodes, so the message does not say it twice.
func trimAADSTSPrefix(desc string, codes []int) string {
	for _, code := range codes {
		prefix := "AADSTS" + strconv.Itoa(code) + ":"
		if strings.HasPrefix(desc, prefix) {
			return strings.TrimSpace(desc[len(prefix):])
		}
	}
	return desc
}
