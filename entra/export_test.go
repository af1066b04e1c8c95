package entra

import (
	"net/http"
	"testing"
	"time"
)

// ParseTokenResponse is parseAnswer of a token endpoint's answer, whose
// lifetime is expires_in, without secrets to mask.
func ParseTokenResponse(status int, header http.Header, body []byte, sentAt time.Time) (*Token, error) {
	return parseAnswer(status, header, body, sentAt, nil, expiresInLifetime)
}

// ParseManagedIdentityResponse is ParseTokenResponse for a managed identity
// endpoint's answer: the lifetime ends at the earlier of expires_in and
// expires_on, either alone will do.
func ParseManagedIdentityResponse(status int, header http.Header, body []byte, sentAt time.Time) (*Token, error) {
	return parseAnswer(status, header, body, sentAt, nil, expiresInOrOnLifetime)
}

// UserTokenRejected reports whether the failure is a UserFailure: of that
// one token, which must not put the application in backoff.
func (e *RequestError) UserTokenRejected() bool { return e.UserFailure() != NotUserFailure }

// SetAzureArcAgentPath makes path the Azure Arc agent's file for the
// duration of t ("" for none).
func SetAzureArcAgentPath(t testing.TB, path string) {
	saved := azureArcAgentPath
	azureArcAgentPath = func() string { return path }
	t.Cleanup(func() { azureArcAgentPath = saved })
}
