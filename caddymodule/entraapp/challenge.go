package entraapp

import (
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/caddy-entra/caddy-entra/entra"
)

// The answers of on-behalf-of applications when the user's token cannot be
// exchanged, with the WWW-Authenticate challenges Microsoft's clients act on.

const invalidTokenChallenge = `Bearer error="invalid_token"`

func userTokenMissing(message string) error {
	return &answerError{Answer{Status: http.StatusUnauthorized, Code: CodeUserTokenMissing,
		Message: message, Challenge: invalidTokenChallenge}}
}

func invalidUserToken(message string) Answer {
	return Answer{Status: http.StatusUnauthorized, Code: CodeUserTokenInvalid, Message: message, Challenge: invalidTokenChallenge}
}

// userFailureAnswer answers Entra's refusal of the user's exchange.
func userFailureAnswer(err error, app resolvedApplication, tenantID string) (Answer, bool) {
	var re *entra.RequestError
	if !errors.As(err, &re) {
		return Answer{}, false
	}
	message := "the token endpoint refused the exchange: " + strings.TrimPrefix(re.Error(), "entra: token request failed: ")
	switch re.UserFailure() {
	case entra.UserTokenInvalid:
		return invalidUserToken(message), true
	case entra.InteractionRequired:
		return Answer{Status: http.StatusUnauthorized, Code: CodeInteractionRequired, Message: message,
			Challenge: claimsChallenge(app.Client.AuthorizeEndpoint(tenantID), re.Claims)}, true
	case entra.ConsentRequired:
		return Answer{Status: http.StatusForbidden, Code: CodeConsentRequired, Message: message,
			Challenge: consentChallenge(app, tenantID, re.Claims)}, true
	}
	return Answer{}, false
}

// claimsChallenge is Graph's insufficient_claims challenge, which MSAL
// clients step up on.
func claimsChallenge(authorizeEndpoint, claims string) string {
	return `Bearer realm="", authorization_uri="` + authorizeEndpoint + `", error="insufficient_claims", claims="` +
		base64.StdEncoding.EncodeToString([]byte(claims)) + `"`
}

// consentChallenge is Microsoft.Identity.Web's 403 for missing consent to
// the middle tier's scopes.
func consentChallenge(app resolvedApplication, tenantID, claims string) string {
	consent := url.Values{"client_id": {app.Client.ClientID()}, "response_type": {"code"},
		"scope": {strings.Join(app.Scopes, " ")}}
	return `Bearer consentUri="` + app.Client.AuthorizeEndpoint(tenantID) + "?" + consent.Encode() +
		`", claims="` + base64.StdEncoding.EncodeToString([]byte(claims)) +
		`", scopes="` + strings.Join(app.Scopes, ",") + `", proposedAction="consent"`
}
