package entratest

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Claims are the claims of an access token issued by the Emulator, as
// returned by Emulator.Verify. They follow Entra's v1.0 app-only tokens
// (see TokenFormat for v2.0: AppID and AppIDACR empty, Audience a GUID).
type Claims struct {
	Audience        string    // aud: the scope's resource, without "/.default"
	Issuer          string    // iss: Options.Issuer
	TenantID        string    // tid
	AppID           string    // appid: the client ID
	AppIDACR        string    // appidacr: "1" client secret, "2" assertion or managed identity
	AuthorizedParty string    // azp: the client ID
	Subject         string    // sub: a stable ID per client
	ObjectID        string    // oid: same as Subject
	IdentityType    string    // idtyp: "app"
	UniqueTokenID   string    // uti (and jti): random, so every token differs
	Version         string    // ver: "1.0"
	KeyID           string    // kid of the token header
	IssuedAt        time.Time // iat
	NotBefore       time.Time // nbf
	ExpiresAt       time.Time // exp
}

// accessTokenClaims is the JWT payload. Audience is a plain string, as in
// Entra's tokens (jwt.RegisteredClaims would encode it as an array).
type accessTokenClaims struct {
	Audience           string           `json:"aud"`
	Issuer             string           `json:"iss"`
	IssuedAt           *jwt.NumericDate `json:"iat"`
	NotBefore          *jwt.NumericDate `json:"nbf"`
	ExpiresAt          *jwt.NumericDate `json:"exp"`
	IdentityProvider   string           `json:"idp"`
	AppID              string           `json:"appid,omitempty"`
	AppIDACR           string           `json:"appidacr,omitempty"`
	AuthorizedParty    string           `json:"azp,omitempty"`
	AuthorizedPartyACR string           `json:"azpacr,omitempty"`
	Subject            string           `json:"sub"`
	ObjectID           string           `json:"oid"`
	IdentityType       string           `json:"idtyp"`
	TenantID           string           `json:"tid"`
	UniqueTokenID      string           `json:"uti"`
	JWTID              string           `json:"jti"`
	Version            string           `json:"ver"`
}

func (c accessTokenClaims) GetExpirationTime() (*jwt.NumericDate, error) { return c.ExpiresAt, nil }
func (c accessTokenClaims) GetIssuedAt() (*jwt.NumericDate, error)       { return c.IssuedAt, nil }
func (c accessTokenClaims) GetNotBefore() (*jwt.NumericDate, error)      { return c.NotBefore, nil }
func (c accessTokenClaims) GetIssuer() (string, error)                   { return c.Issuer, nil }
func (c accessTokenClaims) GetSubject() (string, error)                  { return c.Subject, nil }
func (c accessTokenClaims) GetAudience() (jwt.ClaimStrings, error) {
	return jwt.ClaimStrings{c.Audience}, nil
}

// Values of the appidacr claim: how the client authenticated.
const (
	acrSecret      = "1" // client secret
	acrCertificate = "2" // certificate or other client assertion, managed identity
)

// TokenFormat is the shape of the access tokens the Emulator issues (see
// Emulator.SetTokenFormat).
type TokenFormat int

const (
	// TokenV1 is Entra's v1.0 app-only access token, what Entra issues for
	// resources such as Microsoft Graph: a JWT with tid, appid and azp.
	// The default.
	TokenV1 TokenFormat = iota
	// TokenV2 is Entra's v2.0 access token: a JWT whose client is in azp
	// (with azpacr) and not in appid, ver "2.0", and whose aud is the
	// resource's application (client) ID rather than its URI (here a GUID
	// derived from the resource). Its iss stays Options.Issuer, so that
	// Verify accepts it.
	TokenV2
	// TokenOpaque is a random string that is not a JWT, as a non-Entra
	// OAuth 2.0 server may issue. Verify rejects it.
	TokenOpaque
)

// SetTokenFormat sets the format of tokens issued from now on, by the token
// endpoint and the managed identity endpoints. Default TokenV1.
func (e *Emulator) SetTokenFormat(f TokenFormat) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.format = f
}

// SetOmitClientClaims, when omit is true, leaves the claims that name the
// client (appid, azp, appidacr, azpacr) out of the JWTs issued from now on,
// as some IMDS-compatible endpoints do; Verify then reports an empty
// client. Default false.
func (e *Emulator) SetOmitClientClaims(omit bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.omitClientClaims = omit
}

// issue signs an access token for clientID and resource, valid from now for
// lifetime.
func (e *Emulator) issue(clientID, objectID, resource, acr string, now time.Time, lifetime time.Duration) (string, error) {
	var uti [16]byte
	if _, err := rand.Read(uti[:]); err != nil {
		return "", err
	}
	tokenID := base64.RawURLEncoding.EncodeToString(uti[:])
	e.mu.Lock()
	format, omitClient := e.format, e.omitClientClaims
	e.mu.Unlock()
	if format == TokenOpaque {
		var opaque [32]byte
		if _, err := rand.Read(opaque[:]); err != nil {
			return "", err
		}
		return "opaque-" + base64.RawURLEncoding.EncodeToString(opaque[:]), nil
	}
	claims := accessTokenClaims{
		Audience:         resource,
		Issuer:           e.issuer,
		IssuedAt:         jwt.NewNumericDate(now),
		NotBefore:        jwt.NewNumericDate(now),
		ExpiresAt:        jwt.NewNumericDate(now.Add(lifetime)),
		IdentityProvider: e.issuer,
		AppID:            clientID,
		AppIDACR:         acr,
		AuthorizedParty:  clientID,
		Subject:          objectID,
		ObjectID:         objectID,
		IdentityType:     "app",
		TenantID:         e.tenantID,
		UniqueTokenID:    tokenID,
		JWTID:            tokenID,
		Version:          "1.0",
	}
	if format == TokenV2 {
		sum := sha256.Sum256([]byte(resource))
		claims.Audience = uuidFromBytes(sum[:16])
		claims.AppID, claims.AppIDACR = "", ""
		claims.AuthorizedPartyACR = acr
		claims.Version = "2.0"
	}
	if omitClient {
		claims.AppID, claims.AppIDACR, claims.AuthorizedParty, claims.AuthorizedPartyACR = "", "", "", ""
	}
	token := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	token.Header["kid"] = e.kid
	token.Header["x5t"] = e.kid
	return token.SignedString(e.key)
}

// Verify checks that accessToken was issued by this emulator: an RS256
// signature by its key (kid must match), its issuer, an exp in the future
// and an nbf/iat not in the future (by the emulator's clock, no leeway). It
// returns the token's claims.
func (e *Emulator) Verify(accessToken string) (*Claims, error) {
	var claims accessTokenClaims
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodRS256.Alg()}),
		jwt.WithIssuer(e.issuer),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(e.now),
	)
	var kid string
	_, err := parser.ParseWithClaims(accessToken, &claims, func(t *jwt.Token) (any, error) {
		kid, _ = t.Header["kid"].(string)
		if kid != e.kid {
			return nil, errors.New("unknown kid")
		}
		return &e.key.PublicKey, nil
	})
	if err != nil {
		return nil, fmt.Errorf("entratest: invalid access token: %w", err)
	}
	return &Claims{
		Audience:        claims.Audience,
		Issuer:          claims.Issuer,
		TenantID:        claims.TenantID,
		AppID:           claims.AppID,
		AppIDACR:        claims.AppIDACR,
		AuthorizedParty: claims.AuthorizedParty,
		Subject:         claims.Subject,
		ObjectID:        claims.ObjectID,
		IdentityType:    claims.IdentityType,
		UniqueTokenID:   claims.UniqueTokenID,
		Version:         claims.Version,
		KeyID:           kid,
		IssuedAt:        numericTime(claims.IssuedAt),
		NotBefore:       numericTime(claims.NotBefore),
		ExpiresAt:       numericTime(claims.ExpiresAt),
	}, nil
}

func numericTime(d *jwt.NumericDate) time.Time {
	if d == nil {
		return time.Time{}
	}
	return d.Time
}
