package entraapp

import (
	"cmp"
	"fmt"
	"regexp"
	"strings"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-entra/caddy-entra/entra"
)

// Defaults of on_behalf_of's header and max_users.
const (
	DefaultUserTokenHeader = "Authorization"
	DefaultMaxUsers        = 10000
)

// OnBehalfOfConfig makes an application exchange each request's user token
// for a token to its scopes on the user's behalf (Entra's OBO flow).
type OnBehalfOfConfig struct {
	// Header the user's token comes in, as "Bearer <token>"; it is removed
	// from the request handed on. Default Authorization.
	Header string `json:"header,omitempty"`

	// MaxUsers bounds the exchanged tokens kept in memory, least recently
	// used first out. Default 10000.
	MaxUsers int `json:"max_users,omitempty"`

	// AllowedTenants are tenant IDs (GUIDs) whose users are accepted
	// besides the application's tenant. Default none.
	AllowedTenants []string `json:"allowed_tenants,omitempty"`

	// Audiences are aud values accepted besides the client ID and
	// api://<client ID>. Default none.
	Audiences []string `json:"audiences,omitempty"`
}

// onBehalfOf is an application's on_behalf_of resolved and checked.
type onBehalfOf struct {
	Header   string // canonical
	MaxUsers int
	Rules    entra.UserTokenRules // the local checks of a user's token; TenantID "" until resolved (userTokenRules)
}

// resolveOnBehalfOf checks on_behalf_of against the application's client,
// which must be able to exchange; field prefixes errors.
func resolveOnBehalfOf(obo *OnBehalfOfConfig, cfg entra.Config, client *entra.Client, repl *caddy.Replacer, field string) (*onBehalfOf, error) {
	if err := client.SupportsOnBehalfOf(); err != nil {
		return nil, prefixConfigError(field, err)
	}
	field += "on_behalf_of"
	header, err := CheckHeaderName(field+" header", cmp.Or(obo.Header, DefaultUserTokenHeader))
	if err != nil {
		return nil, err
	}
	resolved := &onBehalfOf{Header: header, MaxUsers: obo.MaxUsers, Rules: entra.UserTokenRules{
		TenantID: client.TenantGUID(), // "" for a domain name: resolved before the first user token is checked
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
		if !tenantGUID.MatchString(tenant) {
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

// tenantGUID is a tenant ID as tid claims carry it.
var tenantGUID = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

func isSpaceOrControl(r rune) bool { return r <= ' ' || r == 0x7f }
