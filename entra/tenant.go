package entra

import (
	"net/url"
	"slices"
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

// multiTenantAliases are the authorities that span many tenants (any
// work or school account, any personal account): they name no one tenant
// to request a token in or check a token against.
var multiTenantAliases = []string{"common", "organizations", "consumers"}

// isMultiTenantAlias reports whether tenant is one of multiTenantAliases,
// in any case, with or without a trailing dot.
func isMultiTenantAlias(tenant string) bool {
	return slices.Contains(multiTenantAliases, strings.ToLower(strings.TrimSuffix(tenant, ".")))
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
