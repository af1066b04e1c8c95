package entra

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxLifetime bounds expires_in, ext_expires_in and refresh_in: larger values
// are not plausible token lifetimes and would overflow time arithmetic.
const maxLifetime = 10 * 365 * 24 * time.Hour

// ParseTokenResponse turns a token endpoint's answer into a Token or a
// *RequestError. sentAt is when the request was sent; ExpiresAt counts from it.
//
// A success needs a 2xx status and a JSON object with a non-empty string
// access_token (visible ASCII only, as it goes into a header) and an
// expires_in that is a positive JSON number or numeric string (e.g. "3599"),
// at most 10 years. token_type, when present, must be "bearer" in any case.
// ext_expires_in and refresh_in are advisory: when malformed they are ignored
// (left 0) rather than failing an otherwise good token.
//
// Anything else is a *RequestError: for non-2xx answers with Entra's error
// fields (error, error_description, error_codes, trace_id, correlation_id)
// and RetryAfter from the Retry-After header; for unusable 2xx answers with
// Err wrapping ErrMalformedResponse. The body is never copied into the error
// except for those sanitized fields.
func ParseTokenResponse(status int, header http.Header, body []byte, sentAt time.Time) (*Token, error) {
	return parseTokenResponse(status, header, body, sentAt, nil)
}

// parseTokenResponse is ParseTokenResponse masking r's secrets in the
// error fields before they are cut to length.
func parseTokenResponse(status int, header http.Header, body []byte, sentAt time.Time, r *redactor) (*Token, error) {
	return parseAnswer(status, header, body, sentAt, r, expiresInLifetime)
}

// lifetimeReader reads a token's lifetime from the fields of an answer, or
// says why it cannot.
type lifetimeReader func(fields map[string]json.RawMessage, sentAt time.Time) (expiresIn time.Duration, expiresAt time.Time, reason string)

// parseAnswer turns an answer into a Token or a *RequestError, as
// ParseTokenResponse says, with the lifetime that lifetime reads.
func parseAnswer(status int, header http.Header, body []byte, sentAt time.Time, r *redactor, lifetime lifetimeReader) (*Token, error) {
	fields, malformed, err := openResponse(status, header, body, r)
	if err != nil {
		return nil, err
	}
	var expiresIn time.Duration
	var expiresAt time.Time
	accessToken, reason := accessTokenField(fields)
	if reason == "" {
		expiresIn, expiresAt, reason = lifetime(fields, sentAt)
	}
	if reason == "" {
		reason = checkTokenType(fields)
	}
	if reason != "" {
		return malformed(reason)
	}
	token := &Token{AccessToken: accessToken, TokenType: "Bearer", ExpiresIn: expiresIn, ExpiresAt: expiresAt}
	// ext_expires_in and refresh_in are advisory: left 0 when absent or
	// malformed rather than failing an otherwise good token.
	token.ExtExpiresIn, _ = parseSeconds(fields["ext_expires_in"])
	token.RefreshIn, _ = parseSeconds(fields["refresh_in"])
	return token, nil
}

// expiresInLifetime reads the lifetime of a token endpoint's answer: its
// expires_in, counted from sentAt.
func expiresInLifetime(fields map[string]json.RawMessage, sentAt time.Time) (time.Duration, time.Time, string) {
	raw, ok := fields["expires_in"]
	if !ok {
		return 0, time.Time{}, "expires_in is missing"
	}
	expiresIn, err := parseSeconds(raw)
	if err != nil {
		return 0, time.Time{}, "expires_in " + err.Error()
	}
	return expiresIn, sentAt.Add(expiresIn), ""
}

// accessTokenField returns the access_token, or why it is unusable: it must
// be a non-empty string of visible ASCII, as it goes into a header.
func accessTokenField(fields map[string]json.RawMessage) (string, string) {
	rawToken, ok := fields["access_token"]
	if !ok {
		return "", "access_token is missing"
	}
	var accessToken string
	if err := json.Unmarshal(rawToken, &accessToken); err != nil {
		return "", "access_token is not a string"
	}
	if accessToken == "" {
		return "", "access_token is empty"
	}
	if !isVisibleASCII(accessToken) {
		return "", "access_token contains characters not allowed in a header"
	}
	return accessToken, ""
}

// checkTokenType returns why token_type is unacceptable, or "": absent,
// null or "bearer" in any case are fine.
func checkTokenType(fields map[string]json.RawMessage) string {
	rawType, ok := fields["token_type"]
	if !ok || isJSONNull(rawType) {
		return ""
	}
	var declared string
	if err := json.Unmarshal(rawType, &declared); err != nil {
		return "token_type is not a string"
	}
	if !strings.EqualFold(declared, "bearer") {
		return "token_type is not Bearer"
	}
	return ""
}

// parseJSONObject decodes body as exactly one JSON object.
func parseJSONObject(body []byte) (map[string]json.RawMessage, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return nil, err
	}
	if fields == nil { // the body was "null"
		return nil, ErrMalformedResponse
	}
	return fields, nil
}

// openResponse parses a token response body into its fields. A non-2xx
// answer, or a 2xx body that is not a JSON object, is returned as the
// *RequestError to give back; malformed makes the error for an unusable 2xx
// answer.
func openResponse(status int, header http.Header, body []byte, r *redactor) (
	fields map[string]json.RawMessage, malformed func(reason string) (*Token, error), err error) {
	if header == nil {
		header = http.Header{}
	}
	fields, jsonErr := parseJSONObject(body)
	if status < 200 || status > 299 {
		reqErr := errorFromFields(status, header, fields, r)
		if jsonErr != nil {
			reqErr.Err = fmt.Errorf("%w: error response is not a JSON object", ErrMalformedResponse)
		}
		return nil, nil, reqErr
	}
	malformed = func(reason string) (*Token, error) {
		reqErr := errorFromFields(status, header, fields, r)
		reqErr.Err = fmt.Errorf("%w: %s", ErrMalformedResponse, reason)
		return nil, reqErr
	}
	if jsonErr != nil {
		_, err := malformed("body is not a JSON object")
		return nil, nil, err
	}
	return fields, malformed, nil
}

// errorFromFields builds the *RequestError of an answer: Entra's (and
// IMDS's) error fields, or App Service's "message" when there is no
// error_description, ignoring those that are absent or of the wrong type.
// Trace and correlation IDs fall back to Entra's x-ms-request-id and
// client-request-id headers. r's secrets are masked before the fields are
// cut to length.
func errorFromFields(status int, header http.Header, fields map[string]json.RawMessage, r *redactor) *RequestError {
	reqErr := &RequestError{
		StatusCode:    status,
		Code:          sanitizeField(stringField(fields, "error"), maxIdentifierLen, r),
		Description:   sanitizeField(stringField(fields, "error_description"), maxDescriptionLen, r),
		TraceID:       sanitizeField(stringField(fields, "trace_id"), maxIdentifierLen, r),
		CorrelationID: sanitizeField(stringField(fields, "correlation_id"), maxIdentifierLen, r),
		SubError:      sanitizeField(stringField(fields, "suberror"), maxIdentifierLen, r),
		Claims:        claimsField(fields, r),
		RetryAfter:    parseRetryAfter(header, time.Now()),
	}
	if reqErr.Description == "" {
		reqErr.Description = sanitizeField(stringField(fields, "message"), maxDescriptionLen, r)
	}
	if reqErr.TraceID == "" {
		reqErr.TraceID = sanitizeField(header.Get("X-Ms-Request-Id"), maxIdentifierLen, r)
	}
	if reqErr.CorrelationID == "" {
		reqErr.CorrelationID = sanitizeField(header.Get("Client-Request-Id"), maxIdentifierLen, r)
	}
	if raw, ok := fields["error_codes"]; ok {
		var codes []int
		if json.Unmarshal(raw, &codes) == nil && len(codes) > 0 {
			reqErr.ErrorCodes = codes[:min(len(codes), maxErrorCodes)]
		}
	}
	return reqErr
}

// claimsField returns the "claims" of an error answer, compact JSON, or ""
// when it is absent, not a JSON object, too long, or holds a secret of r.
func claimsField(fields map[string]json.RawMessage, r *redactor) string {
	var claims map[string]json.RawMessage
	raw := stringField(fields, "claims")
	if raw == "" || len(raw) > maxClaimsLen || r.apply(raw) != raw || json.Unmarshal([]byte(raw), &claims) != nil || claims == nil {
		return ""
	}
	var b bytes.Buffer
	_ = json.Compact(&b, []byte(raw))
	return b.String()
}

func stringField(fields map[string]json.RawMessage, name string) string {
	var s string
	if raw, ok := fields[name]; ok {
		_ = json.Unmarshal(raw, &s) // wrong type: treated as absent
	}
	return s
}

func isJSONNull(raw json.RawMessage) bool {
	return bytes.Equal(bytes.TrimSpace(raw), []byte("null"))
}

// parseSeconds reads a positive number of seconds given as a JSON number or
// a JSON string holding a number ("3599"). Fractions are truncated, the
// conservative direction for a lifetime.
func parseSeconds(raw json.RawMessage) (time.Duration, error) {
	raw = bytes.TrimSpace(raw)
	var text string
	switch {
	case len(raw) > 0 && raw[0] == '"':
		if err := json.Unmarshal(raw, &text); err != nil {
			return 0, fmt.Errorf("is not a number")
		}
		text = strings.TrimSpace(text)
	case len(raw) > 0 && (raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9')):
		text = string(raw)
	default:
		return 0, fmt.Errorf("is not a number")
	}
	if !isJSONNumber(text) {
		return 0, fmt.Errorf("is not a number")
	}
	secs, err := strconv.ParseFloat(text, 64)
	if err != nil || math.IsNaN(secs) || math.IsInf(secs, 0) {
		return 0, fmt.Errorf("is not a number")
	}
	secs = math.Trunc(secs)
	if secs <= 0 {
		return 0, fmt.Errorf("is not positive")
	}
	if secs > maxLifetime.Seconds() {
		return 0, fmt.Errorf("is out of range")
	}
	return time.Duration(secs) * time.Second, nil
}

// isVisibleASCII reports whether s has only the characters RFC 6750 allows
// in a bearer token (a superset: any visible ASCII), so it can go into an
// Authorization header unchanged.
func isVisibleASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// isJSONNumber reports whether text is a number in JSON syntax, so that a
// numeric string accepts exactly what a JSON number would ("3599", "3.6e3")
// and nothing Go-specific ("0x10", "Inf").
func isJSONNumber(text string) bool {
	if text == "" || (text[0] != '-' && (text[0] < '0' || text[0] > '9')) {
		return false
	}
	var n json.Number
	return json.Unmarshal([]byte(text), &n) == nil
}
