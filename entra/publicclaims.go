package entra

import (
	"crypto/sha256"
	"encoding/hex"
	"time"
)

// PublicClaims are the claims of an access token that say what it grants
// and to whom, without anything that could be replayed (never the token or
// its signature). Fields are empty when the token does not carry them.
type PublicClaims struct {
	Audience        string   `json:"aud,omitempty"`   // the first, when it lists several
	AppID           string   `json:"appid,omitempty"` // appid (v1.0), else azp (v2.0) or client_id
	AuthorizedParty string   `json:"azp,omitempty"`
	TenantID        string   `json:"tid,omitempty"`
	Roles           []string `json:"roles,omitempty"` // application permissions granted
	Scopes          string   `json:"scp,omitempty"`   // delegated permissions
	// IssuedAt, NotBefore and ExpiresAt are iat, nbf and exp.
	IssuedAt  *time.Time `json:"iat,omitempty"`
	NotBefore *time.Time `json:"nbf,omitempty"`
	ExpiresAt *time.Time `json:"exp,omitempty"`
	// ObjectID (oid) and ResourceID (xms_mirid, a managed identity's) name
	// the identity the token was issued to; they are not marshaled.
	ObjectID   string `json:"-"`
	ResourceID string `json:"-"`
}

// ReadPublicClaims returns the public claims of a JWT access token, read
// WITHOUT verifying its signature (for display, never for trust), and false
// for a token that is not a JWT.
func ReadPublicClaims(accessToken string) (PublicClaims, bool) {
	claims, err := readClaims(accessToken)
	if err != nil {
		return PublicClaims{}, false
	}
	pc := PublicClaims{
		Audience:        claims.audience(),
		AuthorizedParty: claims.str("azp"),
		TenantID:        claims.str("tid"),
		Roles:           claims.strings("roles"),
		Scopes:          claims.str("scp"),
		IssuedAt:        claims.time("iat"),
		NotBefore:       claims.time("nbf"),
		ExpiresAt:       claims.time("exp"),
		ObjectID:        claims.str("oid"),
		ResourceID:      claims.str("xms_mirid"),
	}
	_, pc.AppID = claims.client()
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
// digits of its SHA-256.
func Fingerprint(accessToken string) string {
	if accessToken == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(accessToken))
	return hex.EncodeToString(sum[:])[:12]
}
