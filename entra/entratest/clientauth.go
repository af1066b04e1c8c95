package entratest

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
)

// clientSecretOf returns the client ID and the client secret a token
// request presents: in the form body (client_secret_post), or in an HTTP
// Basic Authorization header (client_secret_basic), decoded as RFC 6749
// section 2.3.1 says: base64, then the part before the first ':' and the
// part after it each form-unescaped ('+' is a space, %XX a byte). A request
// that presents Basic and also a client_secret or client_assertion in its
// body is refused: a client uses one authentication method per request
// (section 2.3). So is a body client_id that is not Basic's, and a Basic
// header that does not decode. Authorization headers of other schemes are
// ignored.
func (e *Emulator) clientSecretOf(r *http.Request, form formValues) (clientID, secret string, ee *entraError) {
	clientID, secret = form.Get("client_id"), form.Get("client_secret")
	scheme, encoded, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Basic") {
		return clientID, secret, nil
	}
	malformed := &entraError{http.StatusUnauthorized, "invalid_client", 7000216,
		"The Authorization header is not valid HTTP Basic client authentication: base64 of the form-encoded client ID, ':' and the form-encoded client secret."}
	decoded, err := base64.StdEncoding.DecodeString(strings.TrimSpace(encoded))
	if err != nil {
		return "", "", malformed
	}
	rawID, rawSecret, ok := strings.Cut(string(decoded), ":")
	if !ok {
		return "", "", malformed
	}
	basicID, errID := url.QueryUnescape(rawID)
	basicSecret, errSecret := url.QueryUnescape(rawSecret)
	if errID != nil || errSecret != nil || basicID == "" {
		return "", "", malformed
	}
	for _, field := range []string{"client_secret", "client_assertion"} {
		if form.Get(field) != "" {
			return "", "", &entraError{http.StatusBadRequest, "invalid_request", 90023,
				"Only one client credential may be presented: both HTTP Basic authentication and '" + field + "' were sent."}
		}
	}
	if clientID != "" && clientID != basicID {
		return "", "", &entraError{http.StatusBadRequest, "invalid_request", 90023,
			"The client_id in the request body is not the client ID of the HTTP Basic authentication."}
	}
	e.basicAuthentications.Add(1)
	return basicID, basicSecret, nil
}

// BasicAuthentications returns the number of token requests that
// presented their client secret with HTTP Basic authentication
// (client_secret_basic) and decoded well, whether the secret was right or
// not.
func (e *Emulator) BasicAuthentications() int64 { return e.basicAuthentications.Load() }
