package entra

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// ErrNoTenantToResolve is returned by Client.ResolveTenantID for a client
// whose tenant is not configured by domain name.
var ErrNoTenantToResolve = errors.New("entra: no tenant name to resolve")

// DiscoveryError is an OpenID configuration answered with a status other
// than 200.
type DiscoveryError struct {
	StatusCode int
	// RetryAfter is the delay the Retry-After header asked for; 0 for none.
	RetryAfter time.Duration
}

func (e *DiscoveryError) Error() string {
	return fmt.Sprintf("entra: resolving the tenant: the OpenID configuration answered status %d", e.StatusCode)
}

// maxDiscoveryBytes bounds the OpenID configuration read (Entra's is 2 KB).
const maxDiscoveryBytes = 64 << 10

// TenantDiscoveryURL returns the URL of the OpenID configuration of the
// client's tenant when it is configured by domain name (tenant_id, or a
// token endpoint shaped as Entra's), "" otherwise.
func (c *Client) TenantDiscoveryURL() string {
	tenant := c.expectedTenant()
	if tenant == "" || isGUID(tenant) {
		return ""
	}
	base, endpointTenant := entraTenantBase(c.tokenEndpoint)
	if base == "" || !strings.EqualFold(endpointTenant, tenant) {
		return "" // tenant_id beside a token_endpoint elsewhere: no authority to ask
	}
	return base + "/v2.0/.well-known/openid-configuration"
}

// ResolveTenantID resolves a tenant configured by domain name to the
// tenant's ID, read from the issuer of the document at TenantDiscoveryURL
// (ErrNoTenantToResolve when there is none), fetched with the client's HTTP
// client and Config.Timeout.
func (c *Client) ResolveTenantID(ctx context.Context) (string, error) {
	discoveryURL := c.TenantDiscoveryURL()
	if discoveryURL == "" {
		return "", ErrNoTenantToResolve
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, discoveryURL, nil)
	if err != nil {
		return "", fmt.Errorf("entra: resolving the tenant: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", userAgent)
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("entra: resolving the tenant: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDiscoveryBytes+1))
	switch {
	case err != nil:
		return "", fmt.Errorf("entra: resolving the tenant: reading the OpenID configuration: %w", err)
	case resp.StatusCode != http.StatusOK:
		return "", &DiscoveryError{StatusCode: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header, time.Now())}
	case len(body) > maxDiscoveryBytes:
		return "", errors.New("entra: resolving the tenant: the OpenID configuration is too large")
	}
	var document struct {
		Issuer string `json:"issuer"`
	}
	if err := json.Unmarshal(body, &document); err != nil {
		return "", errors.New("entra: resolving the tenant: the OpenID configuration is not a JSON object")
	}
	tenantID := issuerTenant(document.Issuer)
	if tenantID == "" {
		return "", errors.New("entra: resolving the tenant: the OpenID configuration's issuer names no tenant ID")
	}
	return tenantID, nil
}

// issuerTenant returns the first path segment of issuer that is a GUID,
// lower case.
func issuerTenant(issuer string) string {
	u, err := url.Parse(issuer)
	if err != nil {
		return ""
	}
	for segment := range strings.SplitSeq(u.Path, "/") {
		if isGUID(segment) {
			return strings.ToLower(segment)
		}
	}
	return ""
}

// LearnTenant takes the tenant's ID, a GUID, from a source as trusted as
// the client's own token (the tenant's OpenID configuration), for an
// identity whose tenant is configured by domain name and whose client is
// configured. Once learned, later calls change nothing.
func (v *TokenIdentity) LearnTenant(tenantID string) error {
	switch {
	case !isGUID(tenantID):
		return errors.New("entra: a tenant ID to learn must be a GUID")
	case v.tenantID != "" || !v.tenantNamed || v.clientID == "":
		return errors.New("entra: the identity has no tenant name to resolve")
	}
	v.learned.CompareAndSwap(nil, &learnedIdentity{tenantID: strings.ToLower(tenantID), clientID: v.clientID})
	return nil
}
