package binding

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/tokencache"
)

// tokenIdentities holds one entra.TokenIdentity per client identity
// (entra.Client.CacheKey) for the life of the process, so that what a
// managed identity's first token taught (its tenant and client ID) survives
// config reloads: a reloaded config trusts shared records at once instead
// of first fetching a token of its own. Identities are few.
var tokenIdentities sync.Map // string -> *entra.TokenIdentity

// tokenIdentityFor returns the shared entra.TokenIdentity of client.
func tokenIdentityFor(client *entra.Client) *entra.TokenIdentity {
	if v, ok := tokenIdentities.Load(client.CacheKey()); ok {
		return v.(*entra.TokenIdentity)
	}
	v, _ := tokenIdentities.LoadOrStore(client.CacheKey(), entra.NewTokenIdentity(client))
	return v.(*entra.TokenIdentity)
}

// verifyStoredFunc returns the tokencache.Application.VerifyStored of an
// application whose tokens come from a client with tokenIdentity: a record read
// from the store must hold a JWT of that tenant and client (see
// entra.TokenIdentity.Check) issued for the scopes' resource when its aud
// names one (entra.CheckAudience); one that cannot be read as such is
// tokencache.ErrUnverifiable.
//
// resolveTenant, if not nil, is called first (see tenantResolver).
func verifyStoredFunc(tokenIdentity *entra.TokenIdentity, scopes []string, audience *learnedAudience, resolveTenant func()) func(tokencache.Record) error {
	return func(rec tokencache.Record) error {
		if resolveTenant != nil {
			resolveTenant()
		}
		err := tokenIdentity.Check(rec.AccessToken, rec.AccessTokenExpiresAt)
		if errors.Is(err, entra.ErrUnverifiableToken) {
			return fmt.Errorf("%w: %w", tokencache.ErrUnverifiable, err)
		}
		if err != nil {
			return err
		}
		return entra.CheckAudience(rec.AccessToken, scopes, audience.get())
	}
}

// learningFetch wraps fetch so that tokenIdentity learns what its configuration
// does not say (a managed identity's tenant and client ID) from the first
// token this replica itself gets (and audience the aud of its tokens for
// these scopes); afterLearning, if not nil, is called after each
// successful fetch with why the token taught nothing (nil when the
// identity is learned or had nothing to learn).
func learningFetch(fetch tokencache.FetchFunc, tokenIdentity *entra.TokenIdentity, audience *learnedAudience, afterLearning func(learnErr error)) tokencache.FetchFunc {
	return func(ctx context.Context) (tokencache.Fetched, error) {
		fetched, err := fetch(ctx)
		if err == nil {
			learnErr := tokenIdentity.Learn(fetched.AccessToken)
			audience.learn(fetched.AccessToken)
			if afterLearning != nil {
				afterLearning(learnErr)
			}
		}
		return fetched, err
	}
}

// learnedAudiences holds, per client identity and scopes, the aud of this
// process's own first token: a GUID aud (a v2.0 token's resource client ID)
// read from the store must be the same. Kept for the process's life, so
// that reloads keep it.
var learnedAudiences sync.Map // string -> *learnedAudience

// learnedAudience is one application's learned aud.
type learnedAudience struct{ aud atomic.Pointer[string] }

// audienceFor returns the learned aud of client's tokens for scopes.
func audienceFor(client *entra.Client, scopes []string) *learnedAudience {
	key := client.CacheKey() + "\n" + strings.Join(scopes, " ")
	v, _ := learnedAudiences.LoadOrStore(key, new(learnedAudience))
	return v.(*learnedAudience)
}

// learn keeps the aud of a token this replica got itself, once.
func (l *learnedAudience) learn(accessToken string) {
	if aud := entra.Audience(accessToken); aud != "" {
		l.aud.CompareAndSwap(nil, &aud)
	}
}

// get returns the learned aud, "" before the first own token.
func (l *learnedAudience) get() string {
	if aud := l.aud.Load(); aud != nil {
		return *aud
	}
	return ""
}
