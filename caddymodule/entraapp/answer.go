package entraapp

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/caddy-entra/caddy-entra/tokencache"
)

// ErrorBody is the JSON body of an error answer. No answer holds a token, a
// secret or an assertion.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Answer is an error as the handlers and the admin API answer it.
type Answer struct {
	Status     int
	Code       string
	Message    string
	RetryAfter time.Duration // 0: no Retry-After
	Challenge  string        // WWW-Authenticate, if any
}

// AnswerFor maps a token error to its answer: an *answerError's own, else
// 502 MICROSOFT_TOKEN_REQUEST_FAILED with the error's text; a
// *tokencache.Error gives its message and Retry-After, and 503 while token
// requests are paused (not after a permanent failure).
func AnswerFor(err error) Answer {
	var ae *answerError
	if errors.As(err, &ae) {
		return ae.Answer
	}
	answer := Answer{Status: http.StatusBadGateway, Code: CodeTokenRequestFailed, Message: err.Error()}
	var te *tokencache.Error
	if errors.As(err, &te) {
		answer.Message, answer.RetryAfter = te.Message, te.RetryAfter
		if te.RetryAfter > 0 && !te.Permanent {
			answer.Status = http.StatusServiceUnavailable
		}
	}
	return answer
}

// answerError is an error answered as it is.
type answerError struct{ Answer }

func (e *answerError) Error() string { return e.Code + ": " + e.Message }

// Write answers a as JSON on one line.
func (a Answer) Write(w http.ResponseWriter) error { return a.write(w, false) }

func (a Answer) write(w http.ResponseWriter, indent bool) error {
	SetRetryAfter(w.Header(), a.RetryAfter)
	if a.Challenge != "" {
		w.Header().Set("WWW-Authenticate", a.Challenge)
	}
	return writeJSON(w, a.Status, ErrorBody{Code: a.Code, Message: a.Message}, indent)
}

// SetRetryAfter sets Retry-After to d in whole seconds, rounded up, when d
// is positive.
func SetRetryAfter(h http.Header, d time.Duration) {
	if d > 0 {
		h.Set("Retry-After", strconv.Itoa(int((d+time.Second-1)/time.Second)))
	}
}

// WriteJSON answers v with status as JSON on one line, not to be cached.
func WriteJSON(w http.ResponseWriter, status int, v any) error {
	return writeJSON(w, status, v, false)
}

// writeJSON is WriteJSON, indented for people (the admin API) if indent.
func writeJSON(w http.ResponseWriter, status int, v any, indent bool) error {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	if indent {
		enc.SetIndent("", "  ")
	}
	return enc.Encode(v)
}
