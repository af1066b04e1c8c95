package entraapp

import (
	"cmp"
	"errors"
)

// ApplicationIDs is what the config alone tells of whose an application's
// tokens are; an ID only its token can tell (a system-assigned identity's
// client ID) is empty.
type ApplicationIDs struct {
	Name            string
	Scopes          []string
	ClientID        string // the app registration's, or the user-assigned identity's
	ObjectID        string // a managed identity's, when the config selects it so
	ResourceID      string
	ManagedIdentity bool
}

// ApplicationIDs describes every application Validate resolved, sorted by
// name, without secrets.
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
