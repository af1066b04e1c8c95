package entra

import (
	"net/url"
	"strings"
)

// expectedTenant is the tenant the client's tokens come from as configured:
// tenant_id, or the tenant segment of a token endpoint shaped as Entra's
// (/{tenant}/oauth2/v2.0/token or /{tenant}/oauth2/token); "" for a
// managed identity or another server's token endpoint.
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

// entraTenantBase splits a token endpoint shaped as Entra's into the URL of
// its tenant ({authority}/{tenant}) and the tenant; "", "" for another
// shape.
func entraTenantBase(tokenEndpoint string) (base, tenant string) {
	u, err := url.Parse(tokenEndpoint)
	if err != nil || u.RawQuery != "" {
		return "", ""
	}
	path, ok := strings.CutSuffix(u.Path, "/oauth2/v2.0/token")
	if !ok {
		if path, ok = strings.CutSuffix(u.Path, "/oauth2/token"); !ok {
			return "", ""
		}
	}
	tenant = path[strings.LastIndex(path, "/")+1:]
	if tenant == "" || checkTenantID(tenant) != "" {
		return "", ""
	}
	u.Path, u.RawPath = path, ""
	return u.String(), tenant
}
