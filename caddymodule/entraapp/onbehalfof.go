package entraapp

import (
	"cmp"
	"fmt"
	"strings"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-entra/caddy-entra/entra"
)

// DefaultUserTokenHeader is the header an on-behalf-of application reads
// the user's token from, as "Bearer <token>", when none is configured.
const DefaultUserTokenHeader = "Authorization"

// DefaultMaxUsers bounds an on-behalf-of application's in-process cache
// when max_users is not configured.
const DefaultMaxUsers = 10000

// OnBehalfOfConfig makes an application exchange the user's token each
// request carries for a token to the application's scopes on the user's
// behalf (Entra's on-behalf-of flow).
type OnBehalfOfConfig struct {
	// Header is the request header the user's token comes in, as
	// "Bearer <token>". It is removed from the request handed downstream.
	// Hop-by-hop and framing fields and the X-Forwarded-* fields are
	// refused. Default Authorization.
	Header string `json:"header,omitempty"`

	// MaxUsers bounds the exchanged tokens this replica keeps in memory
	// for the application (one per user token); the least recently used
	// goes first. Default 10000.
	MaxUsers int `json:"max_users,omitempty"`

	// AllowedTenants are the tenant IDs (GUIDs), besides the application's
	// own tenant, whose users' tokens may be exchanged. Default none: the
	// application's tenant only.
	AllowedTenants []string `json:"allowed_tenants,omitempty"`

	// Audiences are the aud values accepted in users' tokens besides the
	// application's client ID and api://<client ID>, e.g. an App ID URI
	// of another form. Default none.
	Audiences []string `json:"audiences,omitempty"`
}

// onBehalfOf is an application's on_behalf_of resolved and checked.
type onBehalfOf struct {
	// Header is the canonical name of the header the user's token comes in.
	Header   string
	MaxUsers int
	// Rules are the local checks of a user's token.
	Rules entra.UserTokenRules
}

// resolveOnBehalfOf checks an application's on_behalf_of against its
// client (which must be able to exchange: not a managed identity, a GUID
// tenant) and resolves it. field prefixes errors ("application <name>: ").
func resolveOnBehalfOf(obo *OnBehalfOfConfig, cfg entra.Config, client *entra.Client, repl *caddy.Replacer, field string) (*onBehalfOf, error) {
	field += "on_behalf_of"
	if err := client.SupportsOnBehalfOf(); err != nil {
		return nil, prefixConfigError(strings.TrimSuffix(field, "on_behalf_of"), err)
	}
	header, err := CheckHeaderName(field+" header", cmp.Or(obo.Header, DefaultUserTokenHeader))
	if err != nil {
		return nil, err
	}
	resolved := &onBehalfOf{Header: header, MaxUsers: obo.MaxUsers, Rules: entra.UserTokenRules{
		TenantID: strings.ToLower(client.TenantID()),
		ClientID: cfg.ClientID,
	}}
	switch {
	case obo.MaxUsers < 0:
		return nil, ConfigError(field+" max_users", "must be at least 1")
	case obo.MaxUsers == 0:
		resolved.MaxUsers = DefaultMaxUsers
	}
	r := resolver{repl: repl, prefix: field + " "}
	for _, raw := range obo.AllowedTenants {
		tenant := strings.ToLower(r.value("allowed_tenants", raw))
		if r.err != nil {
			return nil, r.err
		}
		if !isTenantGUID(tenant) {
			return nil, ConfigError(field+" allowed_tenants", fmt.Sprintf("%q is not a tenant ID: users' tokens name "+
				"their tenant by its GUID (tid), so list tenant IDs, not domain names", raw))
		}
		resolved.Rules.AllowedTenants = append(resolved.Rules.AllowedTenants, tenant)
	}
	for _, raw := range obo.Audiences {
		audience := r.value("audiences", raw)
		if r.err != nil {
			return nil, r.err
		}
		if audience == "" || strings.ContainsFunc(audience, isSpaceOrControl) {
			return nil, ConfigError(field+" audiences", fmt.Sprintf("%q: an audience must be non-empty, without spaces", raw))
		}
		resolved.Rules.Audiences = append(resolved.Rules.Audiences, audience)
	}
	return resolved, nil
}

// isTenantGUID reports whether s is a GUID in its 36-character form
// (8-4-4-4-12 hexadecimal digits), as Entra's tid claims carry tenant IDs.
func isTenantGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, r := range s {
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if r != '-' {
				return false
			}
		case !strings.ContainsRune("0123456789abcdefABCDEF", r):
			return false
		}
	}
	return true
}

// isSpaceOrControl reports whether r is white space or a control character.
func isSpaceOrControl(r rune) bool { return r <= ' ' || r == 0x7f }
