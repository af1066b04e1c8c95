package entratest

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// JWTBearerGrantType is the grant_type of an on-behalf-of exchange.
const JWTBearerGrantType = "urn:ietf:params:oauth:grant-type:jwt-bearer"

// DefaultUserClientID is the appid of IssueUserToken's tokens when
// UserToken.ClientID is empty: the front end the user signed in to.
const DefaultUserClientID = "0f0e0d0c-0b0a-4900-8800-000000000fe0"

// UserToken describes a user's access token for IssueUserToken: what a
// front end holds after the user signed in, for the middle tier's API.
type UserToken struct {
	// ObjectID is oid, the user's object ID. Required.
	ObjectID string
	// Subject is sub. Default: derived from ObjectID and Audience, as
	// Entra's pairwise subjects are.
	Subject string
	// TenantID is tid, the user's tenant: one the emulator serves (see
	// AddTenant). Default the emulator's own.
	TenantID string
	// Audience is aud: the middle tier's client ID, api://<client ID> or
	// another App ID URI. Required.
	Audience string
	// Scopes are scp, the delegated permissions the front end got. Default
	// "access_as_user".
	Scopes []string
	// ClientID is appid and azp, the front end's client ID. Default
	// DefaultUserClientID.
	ClientID string
	// Lifetime is exp - iat. Default DefaultTokenLifetime; a negative one
	// makes a token that expired that long ago.
	Lifetime time.Duration
}

// IssueUserToken returns a user's access token signed by the emulator (a
// v1.0 JWT, whatever SetTokenFormat says), issued now by the emulator's
// clock: the assertion a middle tier exchanges on the user's behalf.
func (e *Emulator) IssueUserToken(u UserToken) (string, error) {
	if u.ObjectID == "" || u.Audience == "" {
		return "", errors.New("entratest: a user token needs an object ID and an audience")
	}
	if u.TenantID == "" {
		u.TenantID = e.tenantID
	}
	if !e.serves(u.TenantID) {
		return "", errors.New("entratest: the user token's tenant is not served (AddTenant)")
	}
	if u.Subject == "" {
		sum := sha256.Sum256([]byte(u.ObjectID + "\x00" + u.Audience))
		u.Subject = base64.RawURLEncoding.EncodeToString(sum[:])
	}
	if len(u.Scopes) == 0 {
		u.Scopes = []string{"access_as_user"}
	}
	if u.ClientID == "" {
		u.ClientID = DefaultUserClientID
	}
	if u.Lifetime == 0 {
		u.Lifetime = DefaultTokenLifetime
	}
	return e.issue(grantee{clientID: u.ClientID, acr: "0", tenantID: u.TenantID, objectID: u.ObjectID, subject: u.Subject,
		scopes: strings.Join(u.Scopes, " "), asV1: true}, u.Audience, e.now(), u.Lifetime)
}

// AddAppIDURI adds an App ID URI to clientID (besides api://<client ID>,
// which every client has): user tokens for it are accepted as on-behalf-of
// assertions.
func (e *Emulator) AddAppIDURI(clientID, uri string) {
	e.updateClient(clientID, func(c *client) { c.appIDURIs = append(slices.Clone(c.appIDURIs), uri) })
}

// ChallengeUser makes the on-behalf-of exchanges of the user objectID's
// tokens fail as Entra's conditional access does when the user must pass
// multi-factor authentication: 400 invalid_grant, AADSTS50076, suberror
// basic_action, and claims (a claims challenge, JSON). An empty claims
// ends it.
func (e *Emulator) ChallengeUser(objectID, claims string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if claims == "" {
		delete(e.userChallenges, objectID)
		return
	}
	e.userChallenges[objectID] = claims
}

// SetConsent grants (the default) or withholds the consent to clientID's
// delegated scope (a full value, e.g. "https://graph.microsoft.com/Mail.Read",
// or "https://graph.microsoft.com/.default"). An on-behalf-of exchange
// asking for a withheld scope fails as Entra's does: 400 invalid_grant,
// AADSTS65001, suberror consent_required.
func (e *Emulator) SetConsent(clientID, scope string, granted bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if granted {
		delete(e.withheldConsent, [2]string{clientID, scope})
		return
	}
	e.withheldConsent[[2]string{clientID, scope}] = true
}

// OnBehalfOfRequests returns the number of token requests with the
// jwt-bearer grant (on-behalf-of exchanges) so far, failures included.
// TokenRequests counts them too.
func (e *Emulator) OnBehalfOfRequests() int64 { return e.onBehalfOfRequests.Load() }

// onBehalfOf checks an on-behalf-of exchange by clientID (authenticated) in
// g's tenant, as Entra does: requested_token_use, the assertion (signed by
// the emulator, not expired, issued in the tenant of the request, a user's,
// for one of the client's audiences), the scopes (delegated, of one
// resource, consented) and the user's pending challenge. It fills g with
// the user and returns the resource.
func (e *Emulator) onBehalfOf(form formValues, clientID string, registered client, g *grantee) (string, *userError) {
	fail := func(ee entraError) (string, *userError) { return "", &userError{entraError: ee} }
	invalidGrant := func(code int, description string) (string, *userError) {
		return fail(entraError{http.StatusBadRequest, "invalid_grant", code, description})
	}
	if form.Get("requested_token_use") != "on_behalf_of" {
		return fail(missingParameter("requested_token_use"))
	}
	assertion := form.Get("assertion")
	if assertion == "" {
		return fail(missingParameter("assertion"))
	}
	var user accessTokenClaims
	if err := e.parseSigned(assertion, &user, jwt.WithoutClaimsValidation()); err != nil {
		return invalidGrant(50013, "Assertion failed signature validation. [Reason - The key was not found.]")
	}
	now := e.now()
	if user.ExpiresAt == nil || !user.ExpiresAt.After(now) {
		return invalidGrant(500133, fmt.Sprintf("Assertion is not within its valid time range. Ensure that the access token is not expired before using it for user assertion, or request a new token. Current time: %s, expiry time of assertion %s.",
			now.UTC().Format(time.RFC3339), formatClaimTime(user.ExpiresAt)))
	}
	if user.TenantID != g.tenantID || user.Issuer != e.issuerOf(g.tenantID) {
		return invalidGrant(50013, "Assertion is invalid: it was issued in another tenant than the one the request is for.")
	}
	if user.Scopes == "" || user.IdentityType == "app" {
		return invalidGrant(50013, "Assertion is invalid: it is not a user's token (no delegated permissions).")
	}
	if !slices.Contains(append([]string{clientID, "api://" + clientID}, registered.appIDURIs...), user.Audience) {
		return invalidGrant(500131, "Assertion audience does not match the Client application identifier. Review the documentation at https://learn.microsoft.com/entra/identity-platform/v2-oauth2-on-behalf-of-flow .")
	}
	resource, scopes, ee := delegatedScopes(form.Get("scope"))
	if ee != nil {
		return fail(*ee)
	}
	e.mu.Lock()
	withheld := slices.ContainsFunc(strings.Fields(scopes), func(p string) bool { return e.withheldConsent[[2]string{clientID, resource + "/" + p}] })
	challenge := e.userChallenges[user.ObjectID]
	e.mu.Unlock()
	if withheld {
		return "", &userError{entraError{http.StatusBadRequest, "invalid_grant", 65001,
			fmt.Sprintf("The user or administrator has not consented to use the application with ID '%s'. Send an interactive authorization request for this user and resource.", clientID)},
			"consent_required", ""}
	}
	if challenge != "" {
		return "", &userError{entraError{http.StatusBadRequest, "invalid_grant", 50076,
			fmt.Sprintf("Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access '%s'.", resource)},
			"basic_action", challenge}
	}
	g.objectID, g.subject, g.scopes = user.ObjectID, user.Subject, scopes
	if scopes == ".default" {
		g.scopes = "user_impersonation" // the permissions consented for the resource
	}
	return resource, nil
}

// delegatedScopes reads the scope of an on-behalf-of exchange: delegated
// permissions "{resource}/{permission}" (or a bare permission, of Microsoft
// Graph) of one resource, or "{resource}/.default"; openid, profile, email
// and offline_access are left out. It returns the resource and the
// permissions, space-separated.
func delegatedScopes(scope string) (resource, permissions string, _ *entraError) {
	var names []string
	for _, value := range strings.Fields(scope) {
		switch value {
		case "openid", "profile", "email", "offline_access":
			continue
		}
		r, name := "https://graph.microsoft.com", value
		if i := strings.LastIndex(value, "/"); i >= 0 {
			r, name = value[:i], value[i+1:]
		}
		if r == "" || name == "" {
			return "", "", &entraError{http.StatusBadRequest, "invalid_scope", 70011,
				fmt.Sprintf("The provided value for the input parameter 'scope' is not valid. The scope %s is not valid.", scope)}
		}
		if resource != "" && r != resource {
			return "", "", &entraError{http.StatusBadRequest, "invalid_scope", 28000,
				fmt.Sprintf("Provided value for the input parameter scope is not valid because it contains more than one resource. Scope %s is not valid.", scope)}
		}
		resource = r
		names = append(names, name)
	}
	if resource == "" {
		return "", "", &entraError{http.StatusBadRequest, "invalid_request", 90014,
			"The required field 'scope' is missing from the credential. Ensure that you have all the necessary parameters for the login request."}
	}
	return resource, strings.Join(names, " "), nil
}

// capabilitiesOf reads the client capabilities a claims request parameter
// declares (access_token.xms_cc.values); nil for none.
func capabilitiesOf(claims string) ([]string, *entraError) {
	if claims == "" {
		return nil, nil
	}
	var request struct {
		AccessToken struct {
			ClientCapabilities struct {
				Values []string `json:"values"`
			} `json:"xms_cc"`
		} `json:"access_token"`
	}
	if err := json.Unmarshal([]byte(claims), &request); err != nil {
		return nil, &entraError{http.StatusBadRequest, "invalid_request", 90100,
			"The parameter 'claims' is empty or not valid JSON."}
	}
	return request.AccessToken.ClientCapabilities.Values, nil
}
