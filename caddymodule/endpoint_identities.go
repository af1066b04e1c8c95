package caddymodule

import (
	"slices"

	"github.com/caddyserver/caddy/v2"
)

// applicationIdentity is what entra_token_endpoint knows, from the config
// alone, of one configured application: its scopes and the IDs that name its
// identity. An ID the config does not give (a system-assigned managed
// identity's client ID, a service principal's object ID) is empty: only the
// application's token can tell it.
type applicationIdentity struct {
	Name   string
	Scopes []string
	// ClientID is the app registration's client ID, or the user-assigned
	// managed identity's.
	ClientID string
	// ObjectID and ResourceID are the managed identity's object (principal)
	// ID and Azure resource ID, when the config selects it by them.
	ObjectID   string
	ResourceID string
	// ManagedIdentity: the tokens come from a managed identity (only those
	// have an Azure resource ID).
	ManagedIdentity bool
}

// applicationIdentities resolves every configured application's identity
// (inherited from the default one, placeholders resolved), sorted by name.
// It reads the config only and keeps no secret.
func (a *App) applicationIdentities() ([]applicationIdentity, error) {
	names := make([]string, 0, len(a.Applications))
	for name := range a.Applications {
		names = append(names, name)
	}
	slices.Sort(names)
	repl := caddy.NewReplacer()
	identities := make([]applicationIdentity, 0, len(names))
	for _, name := range names {
		app := a.Applications[name]
		scopes, err := validateApplication(name, app)
		if err != nil {
			return nil, err
		}
		identity, field := a.IdentityConfig, ""
		if !app.IdentityConfig.isZero() {
			field = "application " + name + ": "
			if identity, err = app.IdentityConfig.inherit(a.IdentityConfig, field); err != nil {
				return nil, err
			}
		}
		cfg, err := identity.clientConfig(repl, field)
		if err != nil {
			return nil, err
		}
		id := applicationIdentity{Name: name, Scopes: scopes, ClientID: cfg.ClientID}
		if mi := cfg.ManagedIdentity; mi != nil {
			if mi.ClientID != "" {
				id.ClientID = mi.ClientID
			}
			id.ObjectID, id.ResourceID, id.ManagedIdentity = mi.ObjectID, mi.ResourceID, true
		}
		identities = append(identities, id)
	}
	return identities, nil
}
