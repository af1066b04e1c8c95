package entra

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxLifetime bounds expires_in, ext_expires_in and refresh_in: larger values
// are not plausible lifetimes and would overflow time arithmetic.
const maxLifetime = 10 * 365 * 24 * time.Hour

// lifetimeReader reads a token's lifetime from the fields of an answer, or
// says why it cannot.
type lifetimeReader func(fields map[string]json.RawMessage, sentAt time.Time) (expiresIn time.Duration, expiresAt time.Time, reason string)

// parseAnswer turns a token endpoint's answer into a Token, its ExpiresAt
// counted from sentAt, or a *RequestError: with the error fields of a
// non-2xx answer (nothing else of the body, r's secrets masked before they
// are cut to length), wrapping ErrMalformedResponse for an unusable 2xx
// answer. A success needs a usable access_token, a lifetime that lifetime
// reads (positive, at most 10 years), and no token_type other than bearer.
func parseAnswer(status int, header http.Header, body []byte, sentAt time.Time, r *redactor, lifetime lifetimeReader) (*Token, error) {
	if header == nil {
		header = http.Header{}
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(body, &fields) != nil {
		fields = nil // nil too for "null"
	}
	if status < 200 || status > 299 {
		reqErr := errorFromFields(status, header, fields, r)
		if fields == nil {
			reqErr.Err = fmt.Errorf("%w: error response is not a JSON object", ErrMalformedResponse)
		}
		return nil, reqErr
	}
	var accessToken string
	var expiresIn time.Duration
	var expiresAt time.Time
	reason := "body is not a JSON object"
	if fields != nil {
		accessToken, reason = accessTokenField(fields)
	}
	if reason == "" {
		expiresIn, expiresAt, reason = lifetime(fields, sentAt)
	}
	if reason == "" {
		reason = checkTokenType(fields)
	}
	if reason != "" {
		reqErr := errorFromFields(status, header, fields, r)
		reqErr.Err = fmt.Errorf("%w: %s", ErrMalformedResponse, reason)
		return nil, reqErr
	}
	token := &Token{AccessToken: accessToken, TokenType: "Bearer", ExpiresIn: expiresIn, ExpiresAt: expiresAt}
	token.ExtExpiresIn, _ = parseSeconds(fields["ext_expires_in"])
	token.RefreshIn, _ = parseSeconds(fields["refresh_in"])
	return token, nil
}

// expiresInLifetime reads expires_in, counted from sentAt.
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

// accessTokenField returns the access_token, or why it is unusable.
func accessTokenField(fields map[string]json.RawMessage) (string, string) {
	rawToken, ok := fields["access_token"]
	if !ok {
		return "", "access_token is missing"
	}
	var accessToken string
	switch {
	case json.Unmarshal(rawToken, &accessToken) != nil:
		return "", "access_token is not a string"
	case accessToken == "":
		return "", "access_token is empty"
	case !isVisibleASCII(accessToken):
		return "", "access_token contains characters not allowed in a header"
	}
	return accessToken, ""
}

// checkTokenType returns why token_type is unacceptable, or "".
func checkTokenType(fields map[string]json.RawMessage) string {
	rawType, ok := fields["token_type"]
	if !ok || bytes.Equal(bytes.TrimSpace(rawType), []byte("null")) {
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

// errorFromFields builds the *RequestError of an answer from its error
// fields (App Service's "message" and "correlationId" when there is no
// error_description or correlation_id, the x-ms-request-id and
// client-request-id headers for the IDs), ignoring
// those absent or of the wrong type, r's secrets masked before the cut.
func errorFromFields(status int, header http.Header, fields map[string]json.RawMessage, r *redactor) *RequestError {
	// field is the first of values that is not empty once sanitized.
	field := func(maxLen int, values ...string) string {
		for _, v := range values {
			if s := sanitizeField(v, maxLen, r); s != "" {
				return s
			}
		}
		return ""
	}
	reqErr := &RequestError{
		StatusCode:  status,
		Code:        field(maxIdentifierLen, stringField(fields, "error")),
		Description: field(maxDescriptionLen, stringField(fields, "error_description"), stringField(fields, "message")),
		TraceID:     field(maxIdentifierLen, stringField(fields, "trace_id"), header.Get("X-Ms-Request-Id")),
		CorrelationID: field(maxIdentifierLen, stringField(fields, "correlation_id"), stringField(fields, "correlationId"),
			header.Get("Client-Request-Id")),
		SubError:   field(maxIdentifierLen, stringField(fields, "suberror")),
		Claims:     claimsField(fields, r),
		RetryAfter: parseRetryAfter(header, time.Now()),
	}
	var codes []int
	if json.Unmarshal(fields["error_codes"], &codes) == nil && len(codes) > 0 {
		reqErr.ErrorCodes = codes[:min(len(codes), maxErrorCodes)]
	}
	return reqErr
}

// claimsField returns the "claims" of an error answer, compact JSON, or ""
// when it is absent, not a JSON object, too long, or holds a secret of r or
// a piece of one (maskPieces).
func claimsField(fields map[string]json.RawMessage, r *redactor) string {
	var claims map[string]json.RawMessage
	raw := stringField(fields, "claims")
	if raw == "" || len(raw) > maxClaimsLen || r.apply(raw) != raw || r.maskPieces(raw, len(raw)) != raw || json.Unmarshal([]byte(raw), &claims) != nil || claims == nil {
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

// parseSeconds reads a positive number of seconds, a JSON number or numeric
// string ("3599"), fractions truncated (the conservative direction).
func parseSeconds(raw json.RawMessage) (time.Duration, error) {
	text := numberText(raw)
	secs, err := strconv.ParseFloat(text, 64)
	switch {
	case !isJSONNumber(text) || err != nil || math.IsNaN(secs) || math.IsInf(secs, 0):
		return 0, errors.New("is not a number")
	case math.Trunc(secs) <= 0:
		return 0, errors.New("is not positive")
	case math.Trunc(secs) > maxLifetime.Seconds():
		return 0, errors.New("is out of range")
	}
	return time.Duration(math.Trunc(secs)) * time.Second, nil
}

// numberText returns raw, or the content of a JSON string, trimmed; a
// string that does not decode stays quoted, which isJSONNumber refuses.
func numberText(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	text := string(raw)
	if len(raw) > 0 && raw[0] == '"' && json.Unmarshal(raw, &text) == nil {
		text = strings.TrimSpace(text)
	}
	return text
}

// isVisibleASCII reports whether s can go into an Authorization header
// unchanged (any visible ASCII, a superset of RFC 6750's token).
func isVisibleASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// isJSONNumber reports whether text is a number in JSON syntax ("3.6e3"),
// nothing Go-specific ("0x10", "Inf").
func isJSONNumber(text string) bool {
	if text == "" || (text[0] != '-' && (text[0] < '0' || text[0] > '9')) {
		return false
	}
	var n json.Number
	return json.Unmarshal([]byte(text), &n) == nil
}
