package entra

import (
	"net/http"
	"time"
)

// ParseTokenResponse is parseAnswer of a token endpoint's answer, whose
// lifetime is expires_in, without secrets to mask.
func ParseTokenResponse(status int, header http.Header, body []byte, sentAt time.Time) (*Token, error) {
	return parseAnswer(status, header, body, sentAt, nil, expiresInLifetime)
}

// ParseManagedIdentityResponse is ParseTokenResponse for a managed identity
// endpoint's answer: without expires_in, the lifetime comes from a future
// expires_on.
func ParseManagedIdentityResponse(status int, header http.Header, body []byte, sentAt time.Time) (*Token, error) {
	return parseAnswer(status, header, body, sentAt, nil, expiresInOrOnLifetime)
}

// UserTokenRejected reports whether the failure is a UserFailure: of that
// one token, which must not put the application in backoff.
func (e *RequestError) UserTokenRejected() bool { return e.UserFailure() != NotUserFailure }
