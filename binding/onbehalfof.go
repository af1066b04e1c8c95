package binding

import (
	"context"
	"errors"
	"time"

	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/tokencache"
)

// ConsentRetry is how long a user token refused for missing consent is
// answered with that refusal without asking Entra again: consent granted
// meanwhile by the user or an administrator takes effect within it, while
// a client that retries at once costs one exchange per ConsentRetry.
const ConsentRetry = time.Minute

// userRefusalMemory bounds how long any other refusal of a user's token
// (invalid, or a claims challenge) is remembered; the token's own expiry
// ends it sooner (Entra's access tokens live at most about 28 hours).
const userRefusalMemory = 28 * time.Hour

// ExchangeOptions are the tokencache.ExchangeOptions of an on-behalf-of
// application: its tokens are exchanged with client's credential for
// scopes, at most maxUsers kept in process, named in the store by
// hashKey (nil: this process's own key, nothing shared), for the users of
// tenants tenants (the application's and the allowed ones: one backoff
// each). A refusal of the user's token (RejectedUserToken) never backs the
// application off.
func ExchangeOptions(name string, client *entra.Client, scopes []string, maxUsers, tenants int, hashKey []byte) tokencache.ExchangeOptions {
	return tokencache.ExchangeOptions{
		Name:       name,
		Identity:   client.CacheKey(),
		Scopes:     scopes,
		MaxEntries: maxUsers,
		Tenants:    tenants,
		HashKey:    hashKey,
		Rejected:   RejectedUserToken,
	}
}

// ExchangeFunc returns the exchange of one user's token, checked by
// entra.ReadUserAssertion, for a token to scopes: what the exchanger calls
// on a miss.
func ExchangeFunc(client *entra.Client, user *entra.UserAssertion, scopes []string) tokencache.FetchFunc {
	return func(ctx context.Context) (tokencache.Fetched, error) {
		token, err := client.OnBehalfOf(ctx, user, scopes)
		if err != nil {
			return tokencache.Fetched{}, err
		}
		return tokencache.Fetched{AccessToken: token.AccessToken, ExpiresAt: token.ExpiresAt}, nil
	}
}

// RejectedUserToken reports whether err is Entra's refusal of the user's
// token or the user (entra.RequestError.UserFailure), and how long the
// same user token is answered with it without asking again: ConsentRetry
// for missing consent, else until the token expires.
func RejectedUserToken(err error) (time.Duration, bool) {
	var re *entra.RequestError
	if !errors.As(err, &re) {
		return 0, false
	}
	switch re.UserFailure() {
	case entra.NotUserFailure:
		return 0, false
	case entra.ConsentRequired:
		return ConsentRetry, true
	}
	return userRefusalMemory, true
}
