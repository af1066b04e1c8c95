package entra

import (
	"errors"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
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
)

// Limits on what is kept of the endpoint's error fields, so that a hostile or
// broken endpoint cannot flood logs or error bodies.
const (
	maxDescriptionLen = 400
	maxIdentifierLen  = 128
	maxErrorCodes     = 8
)

// longestDuration is the longest delay a Retry-After parses to: what a
// time.Duration holds, in whole seconds. How long to obey one is the
// caller's policy (the token cache's backoff caps it).
const longestDuration = time.Duration(math.MaxInt64) / time.Second * time.Second

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
	// RetryAfter is the delay asked for by the Retry-After header
	// (delta-seconds or HTTP-date), as sent; 0 when absent.
	RetryAfter time.Duration
	// Err is the underlying cause: a network error, ErrMalformedResponse,
	// ErrResponseTooLarge, ... Nil when the endpoint's error answer says it all.
	Err error
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

// redactionMask replaces a secret in an error's text fields.
const redactionMask = "[REDACTED]"

// redactor removes secrets (a client secret, an assertion, a managed
// identity header) from text an endpoint sent back, in the forms an echo
// could take: as sent, query-escaped (as in the form body) and
// path-escaped. A nil *redactor removes nothing.
type redactor struct {
	forms []string // longest first, so a form containing another goes whole
}

// newRedactor returns a redactor for secrets (empty ones are ignored), nil
// when there is none.
func newRedactor(secrets ...string) *redactor {
	var forms []string
	for _, secret := range secrets {
		if secret == "" {
			continue
		}
		for _, form := range []string{secret, url.QueryEscape(secret), url.PathEscape(secret)} {
			if !slices.Contains(forms, form) {
				forms = append(forms, form)
			}
		}
	}
	if len(forms) == 0 {
		return nil
	}
	slices.SortStableFunc(forms, func(a, b string) int { return len(b) - len(a) })
	return &redactor{forms: forms}
}

// apply returns s with every form of every secret masked.
func (r *redactor) apply(s string) string {
	if r == nil {
		return s
	}
	for _, form := range r.forms {
		s = strings.ReplaceAll(s, form, redactionMask)
	}
	return s
}

// redact masks secret (in every form, see redactor) in the error's text
// fields. An endpoint has no reason to echo the secret, but a broken one
// could. The parsers already redacted before cutting the fields to length;
// this catches what a caller's secret list added.
func (e *RequestError) redact(secret string) {
	r := newRedactor(secret)
	if r == nil {
		return
	}
	e.Code = r.apply(e.Code)
	e.Description = r.apply(e.Description)
	e.TraceID = r.apply(e.TraceID)
	e.CorrelationID = r.apply(e.CorrelationID)
}

// sanitizeLine keeps the first line of s, drops other control characters and
// invalid UTF-8, and cuts it to at most max bytes on a rune boundary.
func sanitizeLine(s string, max int) string {
	return sanitizeField(s, max, nil)
}

// sanitizeField is sanitizeLine that masks r's secrets first: in s as
// given (a secret holding a line break or a control character), again once
// the line is cleaned (an echo with control characters inside the secret),
// and only then cuts to max, so that no part of a secret straddling the cut
// survives.
func sanitizeField(s string, max int, r *redactor) string {
	s = r.apply(s)
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	var b strings.Builder
	for _, c := range s {
		if c == utf8.RuneError || c < ' ' || c == 0x7f || (c >= 0x80 && c < 0xa0) {
			continue
		}
		b.WriteRune(c)
	}
	s = r.apply(b.String())
	if len(s) > max {
		cut := 0
		for i, c := range s {
			if i+utf8.RuneLen(c) > max {
				break
			}
			cut = i + utf8.RuneLen(c)
		}
		s = s[:cut]
	}
	return strings.TrimSpace(s)
}

// parseRetryAfter reads a Retry-After header: delta-seconds or an HTTP-date
// (relative to now). It returns 0 when absent, malformed or in the past, and
// longestDuration for a delay that a time.Duration cannot hold.
func parseRetryAfter(header http.Header, now time.Time) time.Duration {
	value := strings.TrimSpace(header.Get("Retry-After"))
	if value == "" {
		return 0
	}
	var d time.Duration
	if isDigits(value) {
		secs, err := strconv.ParseUint(value, 10, 64)
		if err != nil || secs > uint64(longestDuration/time.Second) {
			return longestDuration // only overflow can fail: too many digits
		}
		d = time.Duration(secs) * time.Second
	} else if at, err := http.ParseTime(value); err == nil {
		// HTTP-dates have whole seconds; round up so the caller never
		// retries a fraction of a second too early.
		d = at.Sub(now) // saturates
		if rem := d % time.Second; rem > 0 {
			d = min(d-rem, longestDuration-time.Second) + time.Second
		}
	}
	return max(d, 0)
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
