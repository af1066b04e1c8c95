package entra

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strings"
	"time"
)

// userAgent identifies the client to the token endpoint.
const userAgent = "caddy-entra"

// Client requests access tokens for one identity. Make it with NewClient.
// It holds no token state and is safe for concurrent use.
type Client struct {
	cfg           Config // validated, defaults applied; TenantID and ClientID as the source names them
	tokenEndpoint string
	source        tokenSource
	claims        string // the claims parameter of Config.ClientCapabilities, "" for none
}

// CredentialFingerprint identifies the credential the client uses at this
// moment, so that failures can be told apart by credential: a SHA-256 of the
// client secret, of the certificate and key files' content last loaded (it
// changes when they are rotated), the federated token file's path, or the
// managed identity. It is a digest, never the secret, but a digest of a
// secret all the same: do not log it.
func (c *Client) CredentialFingerprint() string {
	return c.source.kind() + "\n" + c.source.fingerprint()
}

// TokenEndpoint returns the resolved token endpoint URL:
// {authority_host}/{tenant_id}/oauth2/v2.0/token, or Config.TokenEndpoint.
// For a managed identity it is the managed identity endpoint (IMDS or the
// App Service identity endpoint).
func (c *Client) TokenEndpoint() string { return c.tokenEndpoint }

// TenantID returns the configured tenant ID ("" when only a token endpoint
// was configured, and for a managed identity).
func (c *Client) TenantID() string { return c.cfg.TenantID }

// ClientID returns the configured client ID; for a managed identity the
// user-assigned identity's client ID, "" for the system-assigned identity.
func (c *Client) ClientID() string { return c.cfg.ClientID }

// CredentialType returns the kind of credential: "client_secret",
// "client_certificate", "federated_token" or "managed_identity".
func (c *Client) CredentialType() string { return c.source.kind() }

// SystemAssigned reports whether the client gets the system-assigned
// managed identity's tokens: an identity the configuration does not name,
// the same CacheKey on every host, told apart only by its tokens.
func (c *Client) SystemAssigned() bool {
	mi, ok := c.source.(*managedIdentity)
	return ok && mi.selector == selectNone
}

// CacheKey returns what makes this client's tokens distinct, for a cache
// key (the caller adds the scopes): the token endpoint (or managed identity
// endpoint), the tenant, the client ID, for a managed identity the line
// "managed_identity" and the object or resource ID that selects it, and,
// when token_request_param is set, a hash of the extra parameters (a
// "resource" parameter changes the token). It does not depend on the
// credential: rotating a secret or certificate keeps the key. It holds no
// secret, one field per line.
func (c *Client) CacheKey() string {
	parts := append([]string{c.tokenEndpoint, c.cfg.TenantID, c.cfg.ClientID}, c.source.cacheKeyLines()...)
	if len(c.cfg.ExtraParams) > 0 {
		names := make([]string, 0, len(c.cfg.ExtraParams))
		for name := range c.cfg.ExtraParams {
			names = append(names, name)
		}
		sort.Strings(names)
		h := sha256.New()
		for _, name := range names {
			fmt.Fprintf(h, "%d:%s=%d:%s\n", len(name), name, len(c.cfg.ExtraParams[name]), c.cfg.ExtraParams[name])
		}
		parts = append(parts, "params="+hex.EncodeToString(h.Sum(nil))[:32])
	}
	return strings.Join(parts, "\n")
}

// Token requests an access token for scopes (for Entra, one
// "{resource}/.default" scope).
//
// For the client-credentials credentials it sends a form-encoded POST of
// client_id, scope (space-separated), grant_type=client_credentials, the
// Config.ExtraParams, the claims declaring Config.ClientCapabilities and
// the credential: client_secret, or a client_assertion (signed with the
// certificate, or read from the federated token file). For a managed
// identity it sends a GET to the managed identity endpoint (see
// ManagedIdentityCredential), which takes exactly one scope.
//
// The request is bounded by Config.Timeout on top of ctx. At most
// MaxResponseBytes of the response are read. Every failure is a
// *RequestError; its Err wraps context.DeadlineExceeded or
// context.Canceled when the request was cut short.
func (c *Client) Token(ctx context.Context, scopes []string) (*Token, error) {
	return c.send(ctx, tokenRequest{endpoint: c.tokenEndpoint, scope: joinScopes(scopes),
		grant: url.Values{"grant_type": {"client_credentials"}}})
}

// SupportsOnBehalfOf returns why the client cannot exchange users' tokens
// (a *ConfigError with Field "on_behalf_of"), nil when it can: a managed
// identity cannot (Entra's on-behalf-of flow needs an app registration's
// credential), and tenant_id must be the tenant's GUID, which users'
// tokens carry in tid. Call it when the configuration loads.
func (c *Client) SupportsOnBehalfOf() error {
	switch {
	case c.CredentialType() == "managed_identity":
		return &ConfigError{Field: "on_behalf_of", Reason: "a managed identity cannot exchange a user's token; use an app registration's client_secret, client_certificate, federated_token_file or workload_identity"}
	case !isGUID(c.cfg.TenantID):
		return &ConfigError{Field: "on_behalf_of", Reason: "needs tenant_id as the tenant's ID (a GUID, as users' tokens carry it in tid), not a domain name"}
	}
	return nil
}

// OnBehalfOf exchanges a user's token, checked by ReadUserAssertion, for a
// token to scopes on the user's behalf (Entra's on-behalf-of flow). Scopes
// may be delegated permissions ("https://graph.microsoft.com/User.Read"),
// not only "{resource}/.default".
//
// It sends grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer,
// assertion=<the user token>, requested_token_use=on_behalf_of, scope and,
// as Token does, client_id, the Config.ExtraParams, the claims declaring
// Config.ClientCapabilities and the credential (a certificate's client
// assertion has the token endpoint used as its aud), to the token endpoint
// of the user's tenant, {AuthorityHost}/{user's tid}/oauth2/v2.0/token,
// never to "common" or "organizations". With Config.TokenEndpoint set, that
// endpoint is used as is, whatever the tenant.
//
// Failures are *RequestError as for Token, with OnBehalfOf set (see
// RequestError.UserFailure); the user's token, and its payload and
// signature on their own, are masked like a secret in every field of the
// error. A client that SupportsOnBehalfOf refuses, or a zero UserAssertion,
// fail without a request, with Err wrapping ErrOnBehalfOf.
func (c *Client) OnBehalfOf(ctx context.Context, user *UserAssertion, scopes []string) (*Token, error) {
	if err := c.SupportsOnBehalfOf(); err != nil {
		return nil, &RequestError{Err: fmt.Errorf("%w: %s", ErrOnBehalfOf, err.(*ConfigError).Reason), OnBehalfOf: true}
	}
	if user == nil || user.token == "" || !isGUID(user.TenantID) {
		return nil, &RequestError{Err: fmt.Errorf("%w: no user assertion (use ReadUserAssertion)", ErrOnBehalfOf), OnBehalfOf: true}
	}
	cfg := c.cfg
	cfg.TenantID = user.TenantID
	endpoint, err := resolveTokenEndpoint(cfg) // validated by NewClient with another tenant ID
	if err != nil {
		return nil, &RequestError{Err: err, OnBehalfOf: true}
	}
	token, err := c.send(ctx, tokenRequest{endpoint: endpoint, scope: joinScopes(scopes), grant: url.Values{
		"grant_type":          {jwtBearerGrantType},
		"assertion":           {user.token},
		"requested_token_use": {"on_behalf_of"},
	}}, append(strings.Split(user.token, ".")[1:], user.token)...)
	if reqErr, ok := err.(*RequestError); ok {
		reqErr.OnBehalfOf = true
	}
	return token, err
}

// AuthorizeEndpoint returns the authorization endpoint of tenantID under
// the client's authority, {AuthorityHost}/{tenantID}/oauth2/v2.0/authorize:
// where a user's client answers a claims challenge or gives consent (the
// authorization_uri of a challenge). With Config.TokenEndpoint set it is
// that URL with its final "/token" replaced by "/authorize". It is "" for a
// managed identity, a tenant ID that is not a safe path segment, or a token
// endpoint that does not end in "/token".
func (c *Client) AuthorizeEndpoint(tenantID string) string {
	if c.CredentialType() == "managed_identity" || checkTenantID(tenantID) != "" {
		return ""
	}
	cfg := c.cfg
	cfg.TenantID = tenantID
	endpoint, err := resolveTokenEndpoint(cfg)
	u, _ := url.Parse(endpoint)
	if err != nil || u == nil || !strings.HasSuffix(u.Path, "/token") {
		return ""
	}
	u.Path, u.RawPath = strings.TrimSuffix(u.Path, "/token")+"/authorize", ""
	return u.String()
}

// jwtBearerGrantType is the grant_type of an on-behalf-of exchange.
const jwtBearerGrantType = "urn:ietf:params:oauth:grant-type:jwt-bearer"

// send sends tr as the client's token source builds it, with secrets (and
// the source's own) masked in errors.
func (c *Client) send(ctx context.Context, tr tokenRequest, secrets ...string) (*Token, error) {
	if tr.scope == "" {
		return nil, &RequestError{Err: ErrNoScope}
	}
	if challenge := claimsChallenge(ctx); challenge != "" {
		claims, err := MergeClaims(challenge, c.cfg.ClientCapabilities)
		if err != nil {
			return nil, &RequestError{Err: err}
		}
		tr.grant.Set("claims", claims)
	} else if c.claims != "" {
		tr.grant.Set("claims", c.claims)
	}
	reqCtx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	req, sourceSecrets, err := c.source.newRequest(reqCtx, tr)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", userAgent)
	r := newRedactor(append(secrets, sourceSecrets...)...)

	sentAt := time.Now()
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, c.transportError(ctx, reqCtx, err)
	}
	defer resp.Body.Close()

	// Secrets r masks never reach the error, even in part.
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		reqErr := errorFromFields(resp.StatusCode, resp.Header, nil, r)
		reqErr.Err = c.transportError(ctx, reqCtx, fmt.Errorf("reading response: %w", err)).Err
		return nil, reqErr
	}
	if len(body) > MaxResponseBytes {
		reqErr := errorFromFields(resp.StatusCode, resp.Header, nil, r)
		reqErr.Err = ErrResponseTooLarge
		return nil, reqErr
	}
	return c.source.parse(resp.StatusCode, resp.Header, body, sentAt, r)
}

// transportError wraps a failure to get a response. The *url.Error from
// net/http names the method and URL (which holds no secret: NewClient rejects
// user information) but never the form body. When Config.Timeout (not the
// caller's context) cut the request short, the message says so.
func (c *Client) transportError(callerCtx, reqCtx context.Context, err error) *RequestError {
	if callerCtx.Err() == nil && errors.Is(reqCtx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("timed out after %s: %w", c.cfg.Timeout, err)
	}
	return &RequestError{Err: err}
}

// joinScopes joins the non-blank scopes with single spaces.
func joinScopes(scopes []string) string {
	kept := make([]string, 0, len(scopes))
	for _, s := range scopes {
		if s = strings.TrimSpace(s); s != "" {
			kept = append(kept, s)
		}
	}
	return strings.Join(kept, " ")
}
