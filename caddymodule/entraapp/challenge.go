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
// exchanged: in the WWW-Authenticate forms Microsoft's clients act on.

// invalidTokenChallenge is RFC 6750's challenge of a missing or refused
// bearer token.
const invalidTokenChallenge = `Bearer error="invalid_token"`

// userTokenMissing answers a request without a usable bearer token.
func userTokenMissing(message string) error {
	return &answerError{Answer{Status: http.StatusUnauthorized, Code: CodeUserTokenMissing,
		Message: message, Challenge: invalidTokenChallenge}}
}

// invalidUserToken answers a user token refused locally or by Entra.
func invalidUserToken(message string) Answer {
	return Answer{Status: http.StatusUnauthorized, Code: CodeUserTokenInvalid, Message: message, Challenge: invalidTokenChallenge}
}

// userFailureAnswer maps Entra's refusal of an exchange that is the
// user's (entra.RequestError.UserFailure) to its answer.
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

// claimsChallenge is the challenge of a resource that needs more claims,
// as Graph answers with continuous access evaluation and MSAL-based
// clients step up on:
//
//	Bearer realm="", authorization_uri="<authorize endpoint>", error="insufficient_claims", claims="<base64 of the claims JSON>"
func claimsChallenge(authorizeEndpoint, claims string) string {
	return `Bearer realm="", authorization_uri="` + authorizeEndpoint + `", error="insufficient_claims", claims="` +
		base64.StdEncoding.EncodeToString([]byte(claims)) + `"`
}

// consentChallenge is Microsoft.Identity.Web's answer when consent is
// missing (403):
//
//	Bearer consentUri="<authorize endpoint>?client_id=...&response_type=code&scope=...", claims="<base64>", scopes="<scope>,<scope>", proposedAction="consent"
//
// The consent is the middle tier's: its client ID and the scopes it
// exchanges for.
func consentChallenge(app resolvedApplication, tenantID, claims string) string {
	consent := url.Values{"client_id": {app.Client.ClientID()}, "response_type": {"code"},
		"scope": {strings.Join(app.Scopes, " ")}}
	return `Bearer consentUri="` + app.Client.AuthorizeEndpoint(tenantID) + "?" + consent.Encode() +
		`", claims="` + base64.StdEncoding.EncodeToString([]byte(claims)) +
		`", scopes="` + strings.Join(app.Scopes, ",") + `", proposedAction="consent"`
}
