package entraapp

import (
	"cmp"
	"errors"
)

// ApplicationIDs is what the config alone tells of one configured
// application's tokens: its scopes and the IDs that name whose they are.
// An ID the config does not give (a system-assigned managed identity's
// client ID, a service principal's object ID) is empty: only the
// application's token can tell it. entra_token_endpoint checks what a
// client asks for against them.
type ApplicationIDs struct {
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

// ApplicationIDs describes every configured application, sorted by name,
// from the settings Validate resolved (inherited from the default identity,
// placeholders resolved). It keeps no secret.
func (a *App) ApplicationIDs() ([]ApplicationIDs, error) {
	if a.resolved == nil {
		return nil, errors.New("the entra app's settings are not resolved yet")
	}
	all := make([]ApplicationIDs, 0, len(a.resolved))
	for _, ra := range a.resolved {
		cfg := ra.Config
		ids := ApplicationIDs{Name: ra.Name, Scopes: ra.Scopes, ClientID: cfg.ClientID}
		if mi := cfg.ManagedIdentity; mi != nil {
			ids.ClientID = cmp.Or(mi.ClientID, ids.ClientID)
			ids.ObjectID, ids.ResourceID, ids.ManagedIdentity = mi.ObjectID, mi.ResourceID, true
		}
		all = append(all, ids)
	}
	return all, nil
}
