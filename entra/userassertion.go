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
	// TenantID is the application's tenant ID (a GUID, as tid carries it).
	TenantID string
	// AllowedTenants are the other tenants whose users may be exchanged.
	// Default none.
	AllowedTenants []string
	// ClientID is the application's client ID: aud may be it or
	// "api://<ClientID>".
	ClientID string
	// Audiences are the other accepted aud values (an App ID URI that is
	// not api://<ClientID>). Default none.
	Audiences []string
}

// UserAssertion is a user's access token that passed ReadUserAssertion's
// checks: what Client.OnBehalfOf exchanges. Its claims name the user; the
// token itself is kept unexported and never formatted, logged or encoded.
type UserAssertion struct {
	// TenantID is tid, lower case: the user's tenant, whose authority the
	// exchange goes to.
	TenantID string
	// ObjectID is oid, the user's object ID: the most a log may name.
	ObjectID string
	// Subject is sub.
	Subject string
	// ExpiresAt is exp: no token exchanged for it may be used later.
	ExpiresAt time.Time

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
	// Claim is the claim that failed ("exp", "tid", "aud"), "" when the
	// token is not a JWT at all.
	Claim string
	// Reason says how it failed.
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
// Entra's are a few KB (past 200 groups they name none), and a larger one
// must not reach the token endpoint, where its refusal could pass for the
// application's failure.
const MaxUserTokenBytes = 16 << 10

// ReadUserAssertion checks an incoming user access token locally, before
// any exchange, WITHOUT verifying its signature (Entra does that when it is
// exchanged): at most MaxUserTokenBytes, a JWT with a JSON payload; exp
// present and after now (no leeway); tid a GUID, the rules' tenant or one
// of the allowed tenants (case insensitive); aud (any of them, when a list)
// the client ID, api://<client ID> or one of the rules' audiences (a
// trailing slash ignored). Failures are *UserTokenError.
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

// containsFold reports whether list holds s (no blank entry matches),
// ignoring case and a trailing slash.
func containsFold(list []string, s string) bool {
	return slices.ContainsFunc(list, func(v string) bool {
		v = strings.TrimSuffix(strings.TrimSpace(v), "/")
		return v != "" && strings.EqualFold(v, s)
	})
}
