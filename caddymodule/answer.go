package caddymodule

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/caddy-entra/caddy-entra/tokencache"
)

// This file is the one way entra_token, entra_ready, entra_token_endpoint
// and the admin API answer an error: a status, a code and a message, and
// Retry-After in whole seconds rounded up when the client should wait.
// entra_token, entra_ready and the admin API answer the JSON body
// {"code": "...", "message": "..."} (errorBody); entra_token_endpoint keeps
// the body shapes of the protocols it speaks and shares only the mapping of
// a token error and the rounding. No answer holds a token, a secret or an
// assertion.

// errorBody is the JSON body of an error: {"code": "...", "message": "..."}.
type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// errorAnswer is an error as answered: its status, code and message, and
// how long the client should wait before it retries (0: no Retry-After).
type errorAnswer struct {
	status     int
	code       string
	message    string
	retryAfter time.Duration
}

// answerFor maps a token error to its answer: a *tokencache.Error's own
// status, code, message and Retry-After; any other error is 502
// MICROSOFT_TOKEN_REQUEST_FAILED with its text. The message comes from the
// token endpoint's error (error, AADSTS codes, trace and correlation IDs),
// which never holds a secret or a token.
func answerFor(err error) errorAnswer {
	var te *tokencache.Error
	if errors.As(err, &te) {
		return errorAnswer{status: te.Status, code: te.Code, message: te.Message, retryAfter: te.RetryAfter}
	}
	return errorAnswer{status: http.StatusBadGateway, code: tokencache.CodeTokenRequestFailed, message: err.Error()}
}

// body is the answer's JSON body.
func (a errorAnswer) body() errorBody { return errorBody{Code: a.code, Message: a.message} }

// setRetryAfter sets Retry-After to d in whole seconds, rounded up, when d
// is positive.
func setRetryAfter(h http.Header, d time.Duration) {
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

// writeErrorAnswer answers a: its status, Retry-After, and errorBody as
// writeJSON writes it.
func writeErrorAnswer(w http.ResponseWriter, a errorAnswer, layout jsonLayout) error {
	setRetryAfter(w.Header(), a.retryAfter)
	return writeJSON(w, a.status, a.body(), layout)
}

// writeJSON answers v with status, Content-Type application/json and
// Cache-Control no-store, laid out on one line or indented by two spaces,
// then a newline.
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

// refusal is a request answered without a token before any token is looked
// up (entra_token, entra_token_endpoint), or a token failure the endpoint
// answers in its protocol's shape.
type refusal struct {
	status int
	// reason is entra_token_endpoint's metric label: fixed words, never
	// request data.
	reason string
	// code is the protocol's error code (record: the module's code; imds:
	// the OAuth error); entra_token answers in plain text, without one.
	code    string
	message string
}
