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
// (see TokenFormat for v2.0: AppID and AppIDACR empty, Audience a GUID),
// or for a user's token (on-behalf-of, IssueUserToken) its delegated ones.
type Claims struct {
	Audience        string    // aud: the scope's resource, without "/.default"
	Issuer          string    // iss: Options.Issuer, or the tenant's
	TenantID        string    // tid
	AppID           string    // appid: the client ID
	AppIDACR        string    // appidacr: "1" client secret, "2" assertion or managed identity
	AuthorizedParty string    // azp: the client ID
	Subject         string    // sub: a stable ID per client, or the user's
	ObjectID        string    // oid: same as Subject, or the user's object ID
	IdentityType    string    // idtyp: "app", or "user"
	Scopes          string    // scp: a user's delegated permissions, space-separated
	Capabilities    []string  // xms_cc: the client capabilities the request declared
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
	Scopes             string           `json:"scp,omitempty"`
	Capabilities       []string         `json:"xms_cc,omitempty"`
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

// grantee is whom a token is issued to: a client (app-only), or a user
// through a client (delegated: on-behalf-of, IssueUserToken).
type grantee struct {
	clientID, acr, tenantID string
	objectID, subject       string   // the client's, or the user's
	scopes                  string   // scp, a user's delegated permissions
	capabilities            []string // xms_cc
	asV1                    bool     // a v1.0 JWT whatever SetTokenFormat says
}

// issue signs an access token for g and resource, valid from now for
// lifetime.
func (e *Emulator) issue(g grantee, resource string, now time.Time, lifetime time.Duration) (string, error) {
	var uti [16]byte
	if _, err := rand.Read(uti[:]); err != nil {
		return "", err
	}
	tokenID := base64.RawURLEncoding.EncodeToString(uti[:])
	e.mu.Lock()
	format, omitClient := e.format, e.omitClientClaims
	e.mu.Unlock()
	if g.asV1 {
		format, omitClient = TokenV1, false
	}
	if format == TokenOpaque {
		var opaque [32]byte
		if _, err := rand.Read(opaque[:]); err != nil {
			return "", err
		}
		return "opaque-" + base64.RawURLEncoding.EncodeToString(opaque[:]), nil
	}
	idtyp := "app"
	if g.scopes != "" {
		idtyp = "user"
	}
	claims := accessTokenClaims{
		Audience:         resource,
		Issuer:           e.issuerOf(g.tenantID),
		IssuedAt:         jwt.NewNumericDate(now),
		NotBefore:        jwt.NewNumericDate(now),
		ExpiresAt:        jwt.NewNumericDate(now.Add(lifetime)),
		IdentityProvider: e.issuerOf(g.tenantID),
		AppID:            g.clientID,
		AppIDACR:         g.acr,
		AuthorizedParty:  g.clientID,
		Subject:          g.subject,
		ObjectID:         g.objectID,
		IdentityType:     idtyp,
		Scopes:           g.scopes,
		Capabilities:     g.capabilities,
		TenantID:         g.tenantID,
		UniqueTokenID:    tokenID,
		JWTID:            tokenID,
		Version:          "1.0",
	}
	if format == TokenV2 {
		sum := sha256.Sum256([]byte(resource))
		claims.Audience = uuidFromBytes(sum[:16])
		claims.AppID, claims.AppIDACR = "", ""
		claims.AuthorizedPartyACR = g.acr
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
// signature by its key (kid must match), the issuer of a tenant it serves
// (its tid's), an exp in the future and an nbf/iat not in the future (by
// the emulator's clock, no leeway). It returns the token's claims.
func (e *Emulator) Verify(accessToken string) (*Claims, error) {
	var claims accessTokenClaims
	err := e.parseSigned(accessToken, &claims, jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithTimeFunc(e.now))
	if err == nil && (!e.serves(claims.TenantID) || claims.Issuer != e.issuerOf(claims.TenantID)) {
		err = jwt.ErrTokenInvalidIssuer
	}
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
		Scopes:          claims.Scopes,
		Capabilities:    claims.Capabilities,
		UniqueTokenID:   claims.UniqueTokenID,
		Version:         claims.Version,
		KeyID:           e.kid,
		IssuedAt:        numericTime(claims.IssuedAt),
		NotBefore:       numericTime(claims.NotBefore),
		ExpiresAt:       numericTime(claims.ExpiresAt),
	}, nil
}

// parseSigned parses a token signed RS256 by the emulator's key (kid must
// match) into claims, validated as opts say.
func (e *Emulator) parseSigned(token string, claims jwt.Claims, opts ...jwt.ParserOption) error {
	parser := jwt.NewParser(append([]jwt.ParserOption{jwt.WithValidMethods([]string{jwt.SigningMethodRS256.Alg()})}, opts...)...)
	_, err := parser.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		if kid, _ := t.Header["kid"].(string); kid != e.kid {
			return nil, errors.New("unknown kid")
		}
		return &e.key.PublicKey, nil
	})
	return err
}

func numericTime(d *jwt.NumericDate) time.Time {
	if d == nil {
		return time.Time{}
	}
	return d.Time
}
