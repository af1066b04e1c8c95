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
	// the client cannot, or it was given no user assertion. Permanent.
	ErrOnBehalfOf = errors.New("entra: on-behalf-of exchange not possible")
	// ErrClaimsChallenge means the claims challenge given to a token
	// request is not a JSON object: nothing was sent. Permanent.
	ErrClaimsChallenge = errors.New("entra: the claims challenge is not a JSON object")
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
// Its message never contains a secret, an access token or the request body.
type RequestError struct {
	// StatusCode is the HTTP status of the response; 0 when there was none.
	StatusCode int
	// Code is the endpoint's "error", e.g. "invalid_client".
	Code string
	// Description is the first line of "error_description" (or App
	// Service's "message"), control characters removed, at most 400 bytes.
	Description string
	// ErrorCodes are the "error_codes" (AADSTS numbers), e.g. [7000215].
	ErrorCodes []int
	// TraceID is "trace_id", else the x-ms-request-id header.
	TraceID string
	// CorrelationID is "correlation_id" (App Service's "correlationId"),
	// else the client-request-id header.
	CorrelationID string
	// SubError is Entra's "suberror", e.g. "consent_required".
	SubError string
	// Claims is the answer's "claims" challenge, compact JSON, that a user
	// must satisfy for an on-behalf-of exchange; "" when absent, not an
	// object, longer than 4 KiB or holding a secret.
	Claims string
	// RetryAfter is the delay the Retry-After header asked for; 0 for none.
	RetryAfter time.Duration
	// Err is the underlying cause (a network error, ErrMalformedResponse,
	// ...); nil when the endpoint's error answer says it all.
	Err error
	// OnBehalfOf is set on the failures of Client.OnBehalfOf.
	OnBehalfOf bool
}

// Error returns a one-line message led by Summary, followed by the details
// an operator looks the failure up with, e.g.
//
//	entra: token request failed: invalid client secret (AADSTS7000215): status 401: invalid_client: Invalid client secret provided. ... trace_id=... correlation_id=...
func (e *RequestError) Error() string {
	summary := e.Summary()
	var b strings.Builder
	add := func(sep, s string) {
		if s != "" {
			b.WriteString(sep + s)
		}
	}
	b.WriteString("entra: token request failed: " + summary)
	if e.StatusCode != 0 {
		add(": status ", strconv.Itoa(e.StatusCode))
	}
	add(": ", e.Code)
	var codes []string // those the summary does not name
	for _, code := range e.ErrorCodes {
		if name := "AADSTS" + strconv.Itoa(code); !strings.Contains(summary, name) {
			codes = append(codes, name)
		}
	}
	if len(codes) > 0 {
		add(" (", strings.Join(codes, ", ")+")")
	}
	add(": ", trimAADSTSPrefix(e.Description, e.ErrorCodes))
	if e.Err != nil {
		// The cause need not repeat the summary ("malformed token response: ...").
		add(": ", strings.TrimPrefix(strings.TrimPrefix(e.Err.Error(), "entra: "), summary+": "))
	}
	if e.RetryAfter > 0 {
		add(" retry_after=", e.RetryAfter.String())
	}
	add(" trace_id=", e.TraceID)
	add(" correlation_id=", e.CorrelationID)
	return b.String()
}

// Unwrap returns Err.
func (e *RequestError) Unwrap() error { return e.Err }

// trimAADSTSPrefix drops a leading "AADSTSnnn: " of a code in codes, so the
// message does not say it twice.
func trimAADSTSPrefix(desc string, codes []int) string {
	for _, code := range codes {
		if rest, ok := strings.CutPrefix(desc, "AADSTS"+strconv.Itoa(code)+":"); ok {
			return strings.TrimSpace(rest)
		}
	}
	return desc
}
