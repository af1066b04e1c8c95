package entra

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"
)

// ErrUnverifiableToken means a token cannot be checked against an identity:
// it is not a JWT (an opaque token from a non-Entra server), it lacks the
// claims that name its tenant or client, or the identity is still to be
// learned from the client's own first token. It says nothing about where
// the token came from.
var ErrUnverifiableToken = errors.New("entra: token cannot be checked against its identity")

// TokenMismatchError means a token names another identity than the one
// checked: another tenant (tid), another client (appid, azp or client_id), or
// an expiry later than its own exp claim. Its message names the claim and
// the values compared, which are identifiers, never a token.
type TokenMismatchError struct {
	// Claim is the claim that differs: "tid", "appid", "azp", "client_id" or
	// "exp".
	Claim string
	// Reason says how it differs.
	Reason string
}

func (e *TokenMismatchError) Error() string {
	return "entra: token claim " + e.Claim + " " + e.Reason
}

// ExpirySkew is how much later than its exp claim a token's recorded expiry
// may be (the record's expiry is computed from expires_in on a clock that
// may run ahead of the issuer's).
const ExpirySkew = 5 * time.Minute

// TokenIdentity checks that an access token read from a shared store was
// issued to one client's identity, by reading its JWT claims WITHOUT
// verifying the signature (Entra does not let third parties verify tokens
// for other resources, such as Microsoft Graph's): the check tells a token
// of another tenant or client apart, it does not authenticate one. A store
// that only trusted writers can write (an encrypted Redis record) is what
// authenticates.
//
// The expected tenant is the configured tenant ID when it is a GUID (or,
// with only a token endpoint, the tenant its path names as Entra's do:
// /{tenant}/oauth2/v2.0/token or /{tenant}/oauth2/token); a domain name
// or a managed identity makes it learned from the client's own first token
// (Learn) or resolved through the tenant's OpenID configuration
// (LearnTenant). Until then every token is unverifiable. A token endpoint
// whose path names no tenant (another OAuth 2.0 server's) expects none:
// its tokens are checked by client and expiry at once, and by tid too once
// the client's own first token carried one. The expected client is the
// configured client ID; for a managed identity without one
// (system-assigned, or selected by object or resource ID) it is learned
// likewise.
//
// It is safe for concurrent use.
type TokenIdentity struct {
	tenantID string // the configured tenant GUID, lower case; "" to learn
	clientID string // the configured client ID; "" to learn
	// tenantNamed: a tenant is configured by name or the identity is a
	// managed identity, so its tokens must name the tenant (tid) to be
	// learned from; a bare token endpoint's need not.
	tenantNamed bool
	// noTenant: a token endpoint that names no tenant, whose tokens are
	// checked without one until the first own token names one.
	noTenant bool
	learned  atomic.Pointer[learnedIdentity]
}

// learnedIdentity is what the client's own first token said.
type learnedIdentity struct {
	tenantID, clientID string
}

// NewTokenIdentity returns the identity of c's tokens.
func NewTokenIdentity(c *Client) *TokenIdentity {
	v := &TokenIdentity{clientID: c.ClientID()}
	tenant := c.expectedTenant()
	switch {
	case c.CredentialType() == "managed_identity":
		v.tenantNamed = true
	case isGUID(tenant):
		v.tenantID, v.tenantNamed = strings.ToLower(tenant), true
	case tenant != "":
		v.tenantNamed = true
	default:
		v.noTenant = true
	}
	return v
}

// needsLearning reports whether part of the identity comes from a token.
func (v *TokenIdentity) needsLearning() bool { return v.tenantID == "" || v.clientID == "" }

// Learn takes what the identity does not configure (tenant, client) from
// accessToken, a token the client itself just got from its token endpoint.
// Only a token that reads as a JWT and names every part to be learned (tid
// for a tenant configured by name or a managed identity's; appid, azp or
// client_id for the client) is learned from:
// otherwise Learn returns an error wrapping ErrUnverifiableToken (naming
// the missing claim, never the token) and the identity stays unlearned.
// Once learned, later calls change nothing and return nil; so do calls on
// an identity with nothing to learn.
func (v *TokenIdentity) Learn(accessToken string) error {
	if !v.needsLearning() || v.learned.Load() != nil {
		return nil
	}
	claims, err := readClaims(accessToken)
	if err != nil {
		return err
	}
	tenantID := strings.ToLower(claims.str("tid"))
	_, client := claims.client()
	switch {
	case v.tenantID == "" && v.tenantNamed && tenantID == "":
		return fmt.Errorf("%w: the token has no tid claim to learn the tenant from", ErrUnverifiableToken)
	case v.clientID == "" && client == "":
		return fmt.Errorf("%w: the token has no appid, azp or client_id claim to learn the client from", ErrUnverifiableToken)
	}
	v.learned.CompareAndSwap(nil, &learnedIdentity{tenantID: tenantID, clientID: client})
	return nil
}

// Learned returns the tenant and client of the identity, configured or
// learned, and false while part of it is still to be learned.
func (v *TokenIdentity) Learned() (tenantID, clientID string, ok bool) { return v.expected() }

// expected returns the tenant ("" for none expected) and client to check,
// and false while they are still to be learned.
func (v *TokenIdentity) expected() (tenantID, clientID string, ok bool) {
	tenantID, clientID = v.tenantID, v.clientID
	if !v.needsLearning() {
		return tenantID, clientID, true
	}
	learned := v.learned.Load()
	if learned == nil && v.noTenant && clientID != "" {
		return "", clientID, true
	}
	if learned == nil {
		return "", "", false
	}
	if tenantID == "" {
		tenantID = learned.tenantID
	}
	if clientID == "" {
		clientID = learned.clientID
	}
	return tenantID, clientID, true
}

// Check reports whether accessToken, recorded as expiring at expiresAt,
// belongs to the identity: nil if its tid (when a tenant is expected) and
// its appid, azp or client_id claim name it and expiresAt is not later than
// its exp claim (plus ExpirySkew); an error wrapping ErrUnverifiableToken
// when that cannot be told; a *TokenMismatchError when it names another.
// Errors never contain the token.
func (v *TokenIdentity) Check(accessToken string, expiresAt time.Time) error {
	claims, err := readClaims(accessToken)
	if err != nil {
		return err
	}
	tenantID, clientID, ok := v.expected()
	if !ok {
		return fmt.Errorf("%w: the identity is learned from this replica's own first token, which it has not had yet", ErrUnverifiableToken)
	}
	claim, client := claims.client()
	if client == "" || clientID == "" {
		return fmt.Errorf("%w: the token has no appid, azp or client_id claim", ErrUnverifiableToken)
	}
	if tenantID != "" {
		tid := claims.str("tid")
		if tid == "" {
			return fmt.Errorf("%w: the token has no tid claim", ErrUnverifiableToken)
		}
		if !strings.EqualFold(tid, tenantID) {
			return &TokenMismatchError{Claim: "tid", Reason: fmt.Sprintf("is %s, want %s", quoteClaim(tid), tenantID)}
		}
	}
	if !strings.EqualFold(client, clientID) {
		return &TokenMismatchError{Claim: claim, Reason: fmt.Sprintf("is %s, want %s", quoteClaim(client), clientID)}
	}
	if exp, ok := claims.exp(); ok && expiresAt.After(exp.Add(ExpirySkew)) {
		return &TokenMismatchError{Claim: "exp", Reason: fmt.Sprintf("is %s, but the record says the token expires at %s",
			exp.UTC().Format(time.RFC3339), expiresAt.UTC().Format(time.RFC3339))}
	}
	return nil
}

// tokenClaims is a JWT payload.
type tokenClaims map[string]any

// maxClaimsBytes bounds the payload read: Entra's tokens are a few KB.
const maxClaimsBytes = 64 << 10

// readClaims decodes the payload of a compact JWS without verifying it.
func readClaims(token string) (tokenClaims, error) {
	notJWT := fmt.Errorf("%w: the token is not a JWT", ErrUnverifiableToken)
	header, rest, ok := strings.Cut(token, ".")
	if !ok || header == "" {
		return nil, notJWT
	}
	payload, signature, ok := strings.Cut(rest, ".")
	if !ok || payload == "" || strings.Contains(signature, ".") || len(payload) > maxClaimsBytes {
		return nil, notJWT
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(payload, "="))
	if err != nil {
		return nil, notJWT
	}
	var claims tokenClaims
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&claims); err != nil || claims == nil {
		return nil, notJWT
	}
	return claims, nil
}

// str returns a string claim, "" if absent or not a string.
func (c tokenClaims) str(name string) string {
	s, _ := c[name].(string)
	return s
}

// client returns the claim that names the client and its value: appid (v1.0
// tokens), azp (v2.0) or client_id (RFC 9068 JWT access tokens).
func (c tokenClaims) client() (claim, value string) {
	for _, name := range []string{"appid", "azp", "client_id"} {
		if v := c.str(name); v != "" {
			return name, v
		}
	}
	return "", ""
}

// exp returns the exp claim, if it is a number.
func (c tokenClaims) exp() (time.Time, bool) { return c.numericDate("exp") }

// numericDate returns a NumericDate claim (seconds since the epoch), if it
// is a number.
func (c tokenClaims) numericDate(name string) (time.Time, bool) {
	n, ok := c[name].(json.Number)
	if !ok {
		return time.Time{}, false
	}
	f, err := n.Float64()
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(int64(f), 0), true
}

// quoteClaim quotes a claim value from an untrusted token for an error
// message, cut to a sane length.
func quoteClaim(s string) string {
	const maxLen = 64
	if len(s) > maxLen {
		s = strings.ToValidUTF8(s[:maxLen], "") + "..."
	}
	return fmt.Sprintf("%q", s)
}

// isGUID reports whether s is a GUID in its 8-4-4-4-12 hex form.
func isGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, r := range s {
		switch i {
		case 8, 13, 18, 23:
			if r != '-' {
				return false
			}
		default:
			if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F') {
				return false
			}
		}
	}
	return true
}

// CheckAudience reports whether accessToken was issued for the resource of
// scopes: a *TokenMismatchError when its aud claim names another. Only an
// Entra resource scope ("<resource>/.default") names a resource. An aud
// that is a URI must be that resource. An aud that is a GUID (v2.0 tokens
// carry the resource's client ID) must be the resource's GUID when the
// resource is one ("<GUID>" or "api://<GUID>"), else learnedAudience when
// it is known (the aud of this replica's own token for the same scopes);
// otherwise it cannot be compared and passes. A token that is not a JWT
// passes too; Check tells it apart.
func CheckAudience(accessToken string, scopes []string, learnedAudience string) error {
	if len(scopes) == 0 {
		return nil
	}
	resource, ok := strings.CutSuffix(scopes[0], "/.default")
	if !ok {
		return nil
	}
	claims, err := readClaims(accessToken)
	if err != nil {
		return nil
	}
	audiences := claims.audiences()
	if len(audiences) == 0 {
		return nil
	}
	resourceGUID := strings.TrimPrefix(resource, "api://")
	if !isGUID(resourceGUID) {
		resourceGUID = ""
	}
	for _, aud := range audiences {
		switch {
		case strings.EqualFold(strings.TrimSuffix(aud, "/"), strings.TrimSuffix(resource, "/")):
			return nil
		case !isGUID(aud):
		case resourceGUID != "":
			if strings.EqualFold(aud, resourceGUID) {
				return nil
			}
		case learnedAudience == "" || strings.EqualFold(aud, learnedAudience):
			return nil
		}
	}
	want := resource
	if resourceGUID != "" {
		want += " or " + resourceGUID
	} else if learnedAudience != "" {
		want += " or " + learnedAudience
	}
	return &TokenMismatchError{Claim: "aud", Reason: fmt.Sprintf("is %s, want %s", quoteClaim(audiences[0]), want)}
}

// Audience returns a JWT's aud claim (the first, when it lists several), or
// "" for a token that is not a JWT or has none.
func Audience(accessToken string) string {
	claims, err := readClaims(accessToken)
	if err != nil {
		return ""
	}
	if audiences := claims.audiences(); len(audiences) > 0 {
		return audiences[0]
	}
	return ""
}

// audiences returns the aud claim, a string or an array of strings.
func (c tokenClaims) audiences() []string {
	switch aud := c["aud"].(type) {
	case string:
		return []string{aud}
	case []any:
		var audiences []string
		for _, a := range aud {
			if s, ok := a.(string); ok {
				audiences = append(audiences, s)
			}
		}
		return audiences
	}
	return nil
}
