package entra

import (
	"crypto/sha256"
	"encoding/hex"
	"time"
)

// PublicClaims are the claims of an access token that say what it grants
// and to whom, without anything that could be replayed: never the token,
// never its signature. Fields are empty when the token does not carry them.
type PublicClaims struct {
	// Audience is aud: the resource the token is for (a URI, or its client
	// ID in v2.0 tokens). A token for several audiences shows the first.
	Audience string `json:"aud,omitempty"`
	// AppID is appid (v1.0 tokens) or azp (v2.0): the client it was issued to.
	AppID string `json:"appid,omitempty"`
	// AuthorizedParty is azp, when the token carries it.
	AuthorizedParty string `json:"azp,omitempty"`
	// TenantID is tid.
	TenantID string `json:"tid,omitempty"`
	// Roles are the application permissions (app roles) granted.
	Roles []string `json:"roles,omitempty"`
	// Scopes is scp: delegated permissions (client-credentials tokens have
	// none).
	Scopes string `json:"scp,omitempty"`
	// IssuedAt, NotBefore and ExpiresAt are iat, nbf and exp.
	IssuedAt  *time.Time `json:"iat,omitempty"`
	NotBefore *time.Time `json:"nbf,omitempty"`
	ExpiresAt *time.Time `json:"exp,omitempty"`
	// ObjectID is oid and ResourceID is xms_mirid: the object (principal)
	// ID and, for a managed identity, the Azure resource ID of the identity
	// the token was issued to. Not marshaled: they name the identity, they
	// do not describe the token.
	ObjectID   string `json:"-"`
	ResourceID string `json:"-"`
}

// ReadPublicClaims returns the public claims of a JWT access token, read
// WITHOUT verifying its signature (for display, never for trust), and false
// for a token that is not a JWT (an opaque token).
func ReadPublicClaims(accessToken string) (PublicClaims, bool) {
	claims, err := readClaims(accessToken)
	if err != nil {
		return PublicClaims{}, false
	}
	pc := PublicClaims{
		AuthorizedParty: claims.str("azp"),
		TenantID:        claims.str("tid"),
		Scopes:          claims.str("scp"),
		IssuedAt:        claims.time("iat"),
		NotBefore:       claims.time("nbf"),
		ExpiresAt:       claims.time("exp"),
		ObjectID:        claims.str("oid"),
		ResourceID:      claims.str("xms_mirid"),
	}
	_, pc.AppID = claims.client()
	if audiences := claims.audiences(); len(audiences) > 0 {
		pc.Audience = audiences[0]
	}
	if roles, ok := claims["roles"].([]any); ok {
		for _, role := range roles {
			if s, ok := role.(string); ok {
				pc.Roles = append(pc.Roles, s)
			}
		}
	}
	return pc, true
}

// time returns a NumericDate claim in UTC, nil if absent or not a number.
func (c tokenClaims) time(name string) *time.Time {
	t, ok := c.numericDate(name)
	if !ok {
		return nil
	}
	t = t.UTC()
	return &t
}

// Fingerprint identifies a token without revealing it: the first 12 hex
// digits of its SHA-256. Two replicas holding the same token show the same
// fingerprint; it cannot be turned back into the token.
func Fingerprint(accessToken string) string {
	if accessToken == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(accessToken))
	return hex.EncodeToString(sum[:])[:12]
}
