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

// tokenIdentities holds one entra.TokenIdentity per client identity for
// the process's life, so what a first token taught survives reloads.
var tokenIdentities sync.Map // string -> *entra.TokenIdentity

func tokenIdentityFor(client *entra.Client) *entra.TokenIdentity {
	v, _ := tokenIdentities.LoadOrStore(client.CacheKey(), entra.NewTokenIdentity(client))
	return v.(*entra.TokenIdentity)
}

// verifyStoredFunc checks that a stored record holds a JWT of the identity's
// tenant and client for the scopes' resource; one that cannot be read as
// such is tokencache.ErrUnverifiable. resolveTenant, if set, runs first.
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

// learningFetch makes tokenIdentity and audience learn from the tokens this
// replica gets itself; afterLearning, if set, gets why a token taught
// nothing (nil if it did, or there was nothing to learn).
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

// learnedAudiences holds, per identity and scopes, the aud of the
// process's first own token, which a stored GUID aud must match.
var learnedAudiences sync.Map // string -> *learnedAudience

type learnedAudience struct{ aud atomic.Pointer[string] }

func audienceFor(client *entra.Client, scopes []string) *learnedAudience {
	key := client.CacheKey() + "\n" + strings.Join(scopes, " ")
	v, _ := learnedAudiences.LoadOrStore(key, new(learnedAudience))
	return v.(*learnedAudience)
}

func (l *learnedAudience) learn(accessToken string) {
	if aud := entra.Audience(accessToken); aud != "" {
		l.aud.CompareAndSwap(nil, &aud)
	}
}

func (l *learnedAudience) get() string {
	if aud := l.aud.Load(); aud != nil {
		return *aud
	}
	return ""
}
