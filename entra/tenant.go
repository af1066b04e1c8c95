package entra

import (
	"net/url"
	"strings"
)

// expectedTenant is tenant_id, else the tenant of a token endpoint shaped as
// Entra's; "" for a managed identity or another server's token endpoint.
func (c *Client) expectedTenant() string {
	if c.CredentialType() == "managed_identity" {
		return ""
	}
	if c.cfg.TenantID != "" {
		return c.cfg.TenantID
	}
	_, tenant := entraTenantBase(c.tokenEndpoint)
	return tenant
}

// entraTenantBase splits a token endpoint shaped as Entra's
// ({authority}/{tenant}/oauth2[/v2.0]/token) into {authority}/{tenant} and
// the tenant; "", "" for another shape.
func entraTenantBase(tokenEndpoint string) (base, tenant string) {
	u, err := url.Parse(tokenEndpoint)
	if err != nil || u.RawQuery != "" {
		return "", ""
	}
	path, ok := strings.CutSuffix(u.Path, "/oauth2/v2.0/token")
	if !ok {
		path, ok = strings.CutSuffix(u.Path, "/oauth2/token")
	}
	tenant = path[strings.LastIndex(path, "/")+1:]
	if !ok || tenant == "" || checkTenantID(tenant) != "" {
		return "", ""
	}
	u.Path, u.RawPath = path, ""
	return u.String(), tenant
}
