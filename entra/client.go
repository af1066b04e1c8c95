package entra

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/url"
	"slices"
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

// CloseIdleConnections closes the idle connections of a client with a
// transport of its own (mutual TLS client authentication), for when the
// client is no longer used; the client still works after it. The other
// credentials share the process's transport, which stays open.
func (c *Client) CloseIdleConnections() {
	if cred, ok := c.source.(*tlsCredential); ok {
		cred.CloseIdleConnections()
	}
}

// CredentialFingerprint identifies the credential in use now (a secret's
// or certificate's content: it changes on their rotation; a federated
// token's file, whose content rotates all the time) and how it is
// presented (client_auth basic, mutual TLS, send_x5c): what a reload keeps
// pooled state by. FailureFingerprint, which failures are told apart by,
// adds a federated token's content. The default presentations (a secret in
// the form body, a certificate signing an assertion without x5c, a
// federated token, a managed identity) add nothing to what it was before
// client_auth existed. A digest of a secret all the same: do not log it.
func (c *Client) CredentialFingerprint() string {
	return c.source.kind() + "\n" + c.source.fingerprint()
}

// FailureFingerprint is what a permanent failure is bound to: the
// CredentialFingerprint and, for a federated token, a digest of the token
// in the file now. Each replica's file holds a token of its own (a pod's
// projected token), and Entra's refusal of one (an expired token:
// AADSTS700024) is that token's: another replica, or this one once the
// file holds a new token, is not paused by it. It stats the file, and reads
// it when it changed (tokenDigest): on the refresh path and for requests
// paused by a permanent failure, not on a cache hit. A digest of a secret:
// do not log it.
func (c *Client) FailureFingerprint() string {
	fingerprint := c.CredentialFingerprint()
	if f, ok := c.source.(federatedCredential); ok {
		if digest := f.tokenDigest(); digest != "" {
			fingerprint += "\n" + digest
		}
	}
	return fingerprint
}

// TokenEndpoint returns the resolved token endpoint URL, or for a managed
// identity its endpoint (IMDS or App Service's).
func (c *Client) TokenEndpoint() string { return c.tokenEndpoint }

// TenantID returns the configured tenant ID, "" with only a token endpoint
// or a managed identity.
func (c *Client) TenantID() string { return c.cfg.TenantID }

// ClientID returns the configured client ID; for a managed identity the
// user-assigned identity's, "" for the system-assigned one.
func (c *Client) ClientID() string { return c.cfg.ClientID }

// CredentialType returns "client_secret", "client_certificate",
// "federated_token" or "managed_identity".
func (c *Client) CredentialType() string { return c.source.kind() }

// SystemAssigned reports whether the client gets the system-assigned
// managed identity's tokens: an identity with the same CacheKey on every
// host, told apart only by its tokens.
func (c *Client) SystemAssigned() bool {
	mi, ok := c.source.(*managedIdentity)
	return ok && mi.selector == selectNone
}

// CacheKey returns what makes this client's tokens distinct, for a cache key
// (the caller adds the scopes). It holds no secret and does not change when
// a credential is rotated. The client capabilities count: a token that
// declares them (xms_cc) is not one that does not, so a config that adds or
// drops them never takes the other's token. So does mutual TLS (a line of
// its own), whose tokens the server may bind to the certificate, where a
// secret's or an assertion's are bearer tokens; the other presentations
// get the same tokens and share a key.
func (c *Client) CacheKey() string {
	parts := append([]string{c.tokenEndpoint, c.cfg.TenantID, c.cfg.ClientID}, c.source.cacheKeyLines()...)
	if len(c.cfg.ExtraParams) > 0 {
		h := sha256.New()
		for _, name := range slices.Sorted(maps.Keys(c.cfg.ExtraParams)) {
			fmt.Fprintf(h, "%d:%s=%d:%s\n", len(name), name, len(c.cfg.ExtraParams[name]), c.cfg.ExtraParams[name])
		}
		parts = append(parts, "params="+hex.EncodeToString(h.Sum(nil))[:32])
	}
	if c.claims != "" {
		sum := sha256.Sum256([]byte(c.claims))
		parts = append(parts, "claims="+hex.EncodeToString(sum[:])[:32])
	}
	return strings.Join(parts, "\n")
}

// Token requests a client-credentials access token for scopes (for Entra,
// one "{resource}/.default"), bounded by Config.Timeout. Every failure is a
// *RequestError.
func (c *Client) Token(ctx context.Context, scopes []string) (*Token, error) {
	return c.send(ctx, tokenRequest{endpoint: c.tokenEndpoint, scope: joinScopes(scopes),
		grant: url.Values{"grant_type": {"client_credentials"}}})
}

// SupportsOnBehalfOf returns why the client cannot exchange users' tokens
// (a *ConfigError, field "on_behalf_of"), nil when it can. Call it when the
// configuration loads. A tenant given by domain name can, when
// TenantDiscoveryURL names where to resolve its ID (ResolveTenantID), which
// users' tokens are checked against. (NewClient has refused common,
// organizations and consumers, which name no tenant, for every credential.)
func (c *Client) SupportsOnBehalfOf() error {
	switch {
	case c.CredentialType() == "managed_identity":
		return &ConfigError{Field: "on_behalf_of", Reason: "a managed identity cannot exchange a user's token; use an app registration's client_secret, client_certificate, federated_token_file or workload_identity"}
	case c.TenantGUID() == "" && c.TenantDiscoveryURL() == "":
		return &ConfigError{Field: "on_behalf_of", Reason: "needs tenant_id as the tenant's ID (a GUID, as users' tokens carry it in tid), " +
			"or a domain name whose ID the authority's OpenID configuration gives: not beside a token_endpoint elsewhere"}
	}
	return nil
}

// TenantGUID returns the tenant ID, lower case, when tenant_id (or a token
// endpoint shaped as Entra's) names the tenant by its GUID; "" for a domain
// name, another server's token endpoint or a managed identity.
func (c *Client) TenantGUID() string {
	if tenant := c.expectedTenant(); isGUID(tenant) {
		return strings.ToLower(tenant)
	}
	return ""
}

// OnBehalfOf exchanges a user's token, checked by ReadUserAssertion, for a
// token to scopes on the user's behalf (Entra's on-behalf-of flow), at the
// token endpoint of the user's tenant (never "common"), or at
// Config.TokenEndpoint when set. Failures are *RequestError with OnBehalfOf
// set, the user's token masked like a secret; a client that cannot, or a
// zero UserAssertion, fail without a request, wrapping ErrOnBehalfOf.
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
	}}, assertionSecrets(user.token)...)
	if reqErr, ok := err.(*RequestError); ok {
		reqErr.OnBehalfOf = true
	}
	return token, err
}

// AuthorizeEndpoint returns the authorization endpoint of tenantID under
// the client's authority, where a user answers a claims challenge or
// consents; "" when there is none.
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

	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil || len(body) > MaxResponseBytes {
		reqErr := errorFromFields(resp.StatusCode, resp.Header, nil, r)
		reqErr.Err = ErrResponseTooLarge
		if err != nil {
			reqErr.Err = c.transportError(ctx, reqCtx, fmt.Errorf("reading response: %w", err)).Err
		}
		return nil, reqErr
	}
	return c.source.parse(resp.StatusCode, resp.Header, body, sentAt, r)
}

// transportError wraps a failure to get a response: net/http's *url.Error
// names the URL (NewClient refuses user information in it), never the form.
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
