package entra

import (
	"bytes"
	"cmp"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// ErrUnverifiableToken means a token cannot be checked against an identity:
// it is not a JWT, it lacks the claims that name its tenant or client, or
// the identity is still to be learned from the client's own first token.
var ErrUnverifiableToken = errors.New("entra: token cannot be checked against its identity")

// TokenMismatchError means a token names another identity than the one
// checked (tid, appid, azp, client_id, aud), or an expiry later than its
// exp. Its message names the claim and identifiers, never a token.
type TokenMismatchError struct {
	// Claim is the claim that differs, e.g. "tid".
	Claim string
	// Reason says how it differs.
	Reason string
}

func (e *TokenMismatchError) Error() string {
	return "entra: token claim " + e.Claim + " " + e.Reason
}

// ExpirySkew is how much later than its exp claim a token's recorded expiry
// may be: the record's clock may run ahead of the issuer's.
const ExpirySkew = 5 * time.Minute

// TokenIdentity checks that an access token read from a shared store was
// issued to one client's identity, by its JWT claims read WITHOUT verifying
// the signature (third parties cannot verify tokens for other resources):
// it tells a token of another tenant or client apart; the store's
// encryption is what authenticates. A tenant or client not configured as
// an ID is learned from the client's own first token (Learn) or the
// tenant's OpenID configuration (LearnTenant). Safe for concurrent use.
type TokenIdentity struct {
	tenantID string // the configured tenant GUID, lower case; "" to learn
	clientID string // the configured client ID; "" to learn
	// tenantNamed: its tokens must name the tenant (tid) to be learned from;
	// a bare token endpoint's, which names no tenant, need not.
	tenantNamed bool
	learned     atomic.Pointer[learnedIdentity]
}

// learnedIdentity is what the client's own first token (or the OpenID
// configuration) said.
type learnedIdentity struct {
	tenantID, clientID string
}

// NewTokenIdentity returns the identity of c's tokens.
func NewTokenIdentity(c *Client) *TokenIdentity {
	tenant := c.expectedTenant() // "" for a managed identity
	named := tenant != "" || c.CredentialType() == "managed_identity"
	v := &TokenIdentity{clientID: c.ClientID(), tenantNamed: named}
	if isGUID(tenant) {
		v.tenantID = strings.ToLower(tenant)
	}
	return v
}

func (v *TokenIdentity) needsLearning() bool { return v.tenantID == "" || v.clientID == "" }

// Learn takes what the identity does not configure (tenant, client) from
// accessToken, which the client itself just got. A token that does not name
// every part to be learned is an error wrapping ErrUnverifiableToken, and
// the identity stays unlearned. Once learned, later calls change nothing.
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

// Learned returns the tenant ("" for none expected) and client of the
// identity, configured or learned, and false while part of it is still to
// be learned.
func (v *TokenIdentity) Learned() (tenantID, clientID string, ok bool) {
	learned := v.learned.Load()
	switch {
	case !v.needsLearning():
		return v.tenantID, v.clientID, true
	case learned == nil && !v.tenantNamed && v.clientID != "":
		return "", v.clientID, true
	case learned == nil:
		return "", "", false
	}
	return cmp.Or(v.tenantID, learned.tenantID), cmp.Or(v.clientID, learned.clientID), true
}

// Check reports whether accessToken, recorded as expiring at expiresAt,
// belongs to the identity: nil if its tid (when a tenant is expected) and
// client claims name it and expiresAt is within its exp plus ExpirySkew; an
// error wrapping ErrUnverifiableToken when that cannot be told; a
// *TokenMismatchError when it names another.
func (v *TokenIdentity) Check(accessToken string, expiresAt time.Time) error {
	claims, err := readClaims(accessToken)
	if err != nil {
		return err
	}
	tenantID, clientID, ok := v.Learned()
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
	header, rest, _ := strings.Cut(token, ".")
	payload, signature, ok := strings.Cut(rest, ".")
	if !ok || header == "" || payload == "" || strings.Contains(signature, ".") || len(payload) > maxClaimsBytes {
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

func (c tokenClaims) exp() (time.Time, bool) { return c.numericDate("exp") }

// numericDate returns a NumericDate claim, if it is a number.
func (c tokenClaims) numericDate(name string) (time.Time, bool) {
	n, _ := c[name].(json.Number)
	f, err := n.Float64() // fails for "", not a number
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(int64(f), 0), true
}

// quoteClaim quotes an untrusted claim value for an error, cut to length.
func quoteClaim(s string) string {
	const maxLen = 64
	if len(s) > maxLen {
		s = strings.ToValidUTF8(s[:maxLen], "") + "..."
	}
	return fmt.Sprintf("%q", s)
}

// isGUID reports whether s is a GUID in its 8-4-4-4-12 form.
func isGUID(s string) bool { return len(s) == 36 && uuid.Validate(s) == nil }

// CheckAudience returns a *TokenMismatchError when accessToken's aud names
// another resource than scopes' "<resource>/.default". A GUID aud (v2.0
// tokens) must be the resource's GUID when it is one, else learnedAudience
// (of this replica's own token for the scopes) when known; otherwise it
// passes, as does a token that is not a JWT (Check tells it apart).
func CheckAudience(accessToken string, scopes []string, learnedAudience string) error {
	if len(scopes) == 0 {
		return nil
	}
	resource, ok := strings.CutSuffix(scopes[0], "/.default")
	if !ok {
		return nil
	}
	claims, err := readClaims(accessToken)
	audiences := claims.audiences()
	if err != nil || len(audiences) == 0 {
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
	if other := cmp.Or(resourceGUID, learnedAudience); other != "" {
		want += " or " + other
	}
	return &TokenMismatchError{Claim: "aud", Reason: fmt.Sprintf("is %s, want %s", quoteClaim(audiences[0]), want)}
}

// Audience returns a JWT's (first) aud claim, "" for none or not a JWT.
func Audience(accessToken string) string {
	claims, _ := readClaims(accessToken)
	return claims.audience()
}

// audience returns the first aud, "" for none.
func (c tokenClaims) audience() string {
	if audiences := c.audiences(); len(audiences) > 0 {
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
		return c.strings("aud")
	}
	return nil
}

// strings returns the strings of an array claim.
func (c tokenClaims) strings(name string) []string {
	var values []string
	list, _ := c[name].([]any)
	for _, v := range list {
		if s, ok := v.(string); ok {
			values = append(values, s)
		}
	}
	return values
}
