package entraapp

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/caddy-entra/caddy-entra/tokencache"
)

// This file is the one way the handlers and the admin API answer an error
// (Answer); entra_token_endpoint keeps its protocols' body shapes and shares
// the mapping of a token error and the Retry-After rounding. No answer
// holds a token, a secret or an assertion.

// ErrorBody is the JSON body of an error: {"code": "...", "message": "..."}.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Answer is an error as answered: its status, code and message, and how
// long the client should wait before it retries (0: no Retry-After).
type Answer struct {
	Status     int
	Code       string
	Message    string
	RetryAfter time.Duration
	// Challenge, when set, is the WWW-Authenticate of the answer (the
	// answers of on-behalf-of applications).
	Challenge string
}

// AnswerFor maps a token error to its answer: an *answerError's own; else
// MICROSOFT_TOKEN_REQUEST_FAILED with the error's text, 502, or for a
// *tokencache.Error its message, its Retry-After, and 503 while token
// requests are paused for a while (not after a permanent failure). The
// message comes from the token endpoint's error (error, AADSTS codes,
// trace and correlation IDs), which never holds a secret or a token.
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

// answerError is an error answered as it is (an application that is not
// configured).
type answerError struct{ Answer }

// Error returns "CODE: message".
func (e *answerError) Error() string { return e.Code + ": " + e.Message }

// Write answers a on one line (see WriteJSON): its status, Retry-After and
// ErrorBody.
func (a Answer) Write(w http.ResponseWriter) error { return a.write(w, oneLine) }

func (a Answer) write(w http.ResponseWriter, layout jsonLayout) error {
	SetRetryAfter(w.Header(), a.RetryAfter)
	if a.Challenge != "" {
		w.Header().Set("WWW-Authenticate", a.Challenge)
	}
	return writeJSON(w, a.Status, ErrorBody{Code: a.Code, Message: a.Message}, layout)
}

// SetRetryAfter sets Retry-After to d in whole seconds, rounded up, when d
// is positive.
func SetRetryAfter(h http.Header, d time.Duration) {
	if d > 0 {
		h.Set("Retry-After", strconv.Itoa(int((d+time.Second-1)/time.Second)))
	}
}

// jsonLayout is how writeJSON lays out a body: one line for programs (the
// handlers' answers), indented for people (the admin API's).
type jsonLayout bool

const (
	oneLine  jsonLayout = false
	indented jsonLayout = true
)

// WriteJSON answers v with status, Content-Type application/json and
// Cache-Control no-store, on one line followed by a newline.
func WriteJSON(w http.ResponseWriter, status int, v any) error {
	return writeJSON(w, status, v, oneLine)
}

// writeJSON is WriteJSON, laid out on one line or indented by two spaces.
func writeJSON(w http.ResponseWriter, status int, v any, layout jsonLayout) error {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	if layout == indented {
		enc.SetIndent("", "  ")
	}
	return enc.Encode(v)
}
