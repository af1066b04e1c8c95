package entra

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// UserTokenRules are the local checks of ReadUserAssertion: which tenants'
// users and which audiences an on-behalf-of application accepts.
type UserTokenRules struct {
	TenantID       string   // the application's tenant ID (a GUID)
	AllowedTenants []string // other tenants whose users may be exchanged; default none
	ClientID       string   // aud may be it or "api://<ClientID>"
	Audiences      []string // other accepted aud values (an App ID URI); default none
}

// UserAssertion is a user's access token that passed ReadUserAssertion's
// checks: what Client.OnBehalfOf exchanges. The token itself is unexported
// and never formatted, logged or encoded.
type UserAssertion struct {
	TenantID  string    // tid, lower case: the exchange goes to its authority
	ObjectID  string    // oid, the user's object ID: the most a log may name
	Subject   string    // sub
	ExpiresAt time.Time // exp: no token exchanged for it may be used later

	token string
}

// Format prints the claims and never the token, for every verb.
func (a UserAssertion) Format(f fmt.State, _ rune) {
	_, _ = io.WriteString(f, "entra.UserAssertion{TenantID:"+a.TenantID+" ObjectID:"+a.ObjectID+
		" Subject:"+a.Subject+" ExpiresAt:"+a.ExpiresAt.UTC().Format(time.RFC3339)+" token:"+redactionMask+"}")
}

// UserTokenError is a user token refused by ReadUserAssertion. It names the
// check that failed, never a claim's value or the token.
type UserTokenError struct {
	Claim  string // "exp", "tid" or "aud"; "" when it is not a JWT at all
	Reason string
}

// Error returns e.g. "entra: user token: tid: is not the application's
// tenant or an allowed tenant".
func (e *UserTokenError) Error() string {
	if e.Claim == "" {
		return "entra: user token: " + e.Reason
	}
	return "entra: user token: " + e.Claim + ": " + e.Reason
}

// MaxUserTokenBytes bounds the user tokens ReadUserAssertion accepts:
// Entra's are a few KB, and a larger one must not reach the token endpoint,
// where its refusal could pass for the application's failure.
const MaxUserTokenBytes = 16 << 10

// ReadUserAssertion checks an incoming user access token locally, WITHOUT
// verifying its signature (Entra does when it is exchanged): a JWT of at
// most MaxUserTokenBytes, exp after now, tid one of the rules' tenants and
// an aud the rules accept (case and a trailing slash ignored). Failures are
// *UserTokenError.
func ReadUserAssertion(token string, now time.Time, rules UserTokenRules) (*UserAssertion, error) {
	if len(token) > MaxUserTokenBytes {
		return nil, &UserTokenError{Reason: "is longer than 16 KiB"}
	}
	claims, err := readClaims(token)
	if err != nil || !isVisibleASCII(token) {
		return nil, &UserTokenError{Reason: "is not a JWT"}
	}
	exp, ok := claims.exp()
	switch {
	case !ok:
		return nil, &UserTokenError{Claim: "exp", Reason: "is missing"}
	case !exp.After(now):
		return nil, &UserTokenError{Claim: "exp", Reason: "has passed: the token has expired"}
	}
	tid := strings.ToLower(claims.str("tid"))
	if !isGUID(tid) {
		return nil, &UserTokenError{Claim: "tid", Reason: "is missing or not a tenant ID"}
	}
	if !containsFold(append([]string{rules.TenantID}, rules.AllowedTenants...), tid) {
		return nil, &UserTokenError{Claim: "tid", Reason: "is not the application's tenant or an allowed tenant"}
	}
	accepted := rules.Audiences
	if rules.ClientID != "" {
		accepted = append([]string{rules.ClientID, "api://" + rules.ClientID}, accepted...)
	}
	if !slices.ContainsFunc(claims.audiences(), func(aud string) bool {
		return aud != "" && containsFold(accepted, strings.TrimSuffix(aud, "/"))
	}) {
		return nil, &UserTokenError{Claim: "aud", Reason: "is not the application's client ID, api://<client ID> or an accepted audience"}
	}
	return &UserAssertion{TenantID: tid, ObjectID: claims.str("oid"), Subject: claims.str("sub"), ExpiresAt: exp.UTC(), token: token}, nil
}

// containsFold reports whether list holds s, ignoring case and a trailing
// slash; a blank entry matches nothing.
func containsFold(list []string, s string) bool {
	return slices.ContainsFunc(list, func(v string) bool {
		v = strings.TrimSuffix(strings.TrimSpace(v), "/")
		return v != "" && strings.EqualFold(v, s)
	})
}
