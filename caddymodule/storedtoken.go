package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/tokencache"
)

// tokenIdentities holds one entra.TokenIdentity per client identity
// (entra.Client.Identity) for the life of the process, so that what a
// managed identity's first token taught (its tenant and client ID) survives
// config reloads: a reloaded config trusts shared records at once instead
// of first fetching a token of its own. Identities are few.
var tokenIdentities sync.Map // string -> *entra.TokenIdentity

// tokenIdentityFor returns the shared entra.TokenIdentity of client.
func tokenIdentityFor(client *entra.Client) *entra.TokenIdentity {
	if v, ok := tokenIdentities.Load(client.Identity()); ok {
		return v.(*entra.TokenIdentity)
	}
	v, _ := tokenIdentities.LoadOrStore(client.Identity(), entra.NewTokenIdentity(client))
	return v.(*entra.TokenIdentity)
}

// verifyStoredFunc returns the tokencache.Application.VerifyStored of an
// application whose tokens come from a client with identity: a record read
// from the store must hold a JWT of that tenant and client (see
// entra.TokenIdentity.Check) issued for the scopes' resource when its aud
// names one (entra.CheckAudience); one that cannot be read as such is
// tokencache.ErrUnverifiable.
func verifyStoredFunc(identity *entra.TokenIdentity, scopes []string) func(tokencache.ClientCredential) error {
	return func(rec tokencache.ClientCredential) error {
		err := identity.Check(rec.AccessToken, rec.AccessTokenExpiresAt)
		if errors.Is(err, entra.ErrUnverifiableToken) {
			return fmt.Errorf("%w: %w", tokencache.ErrUnverifiable, err)
		}
		if err != nil {
			return err
		}
		return entra.CheckAudience(rec.AccessToken, scopes)
	}
}

// learningFetch wraps fetch so that identity learns what its configuration
// does not say (a managed identity's tenant and client ID) from the first
// token this replica itself gets; afterLearning, if not nil, is called
// after each successful fetch.
func learningFetch(fetch tokencache.FetchFunc, identity *entra.TokenIdentity, afterLearning func()) tokencache.FetchFunc {
	return func(ctx context.Context) (tokencache.Fetched, error) {
		fetched, err := fetch(ctx)
		if err == nil {
			identity.Learn(fetched.AccessToken)
			if afterLearning != nil {
				afterLearning()
			}
		}
		return fetched, err
	}
}
