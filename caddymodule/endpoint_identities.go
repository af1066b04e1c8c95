package caddymodule

import "errors"

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

// applicationIdentities describes every configured application's identity,
// sorted by name, from the settings Validate resolved (inherited from the
// default identity, placeholders resolved). It keeps no secret.
func (a *App) applicationIdentities() ([]applicationIdentity, error) {
	if a.resolved == nil {
		return nil, errors.New("the entra app's settings are not resolved yet")
	}
	identities := make([]applicationIdentity, 0, len(a.resolved))
	for _, ra := range a.resolved {
		cfg := ra.Config
		id := applicationIdentity{Name: ra.Name, Scopes: ra.Scopes, ClientID: cfg.ClientID}
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
