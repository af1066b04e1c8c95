package binding

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/tokencache"
)

// ConsentRetry is how long a refusal for missing consent is remembered:
// consent granted meanwhile takes effect within it.
const ConsentRetry = time.Minute

// userRefusalMemory bounds any other refusal's memory; the token's expiry
// (at most about 28 hours) ends it sooner.
const userRefusalMemory = 28 * time.Hour

// ExchangeOptions are an on-behalf-of application's exchange options:
// hashKey names entries in the store (nil: nothing shared); tenants
// counts the tenants, one backoff each.
func ExchangeOptions(name string, client *entra.Client, scopes []string, maxUsers, tenants int, hashKey []byte) tokencache.ExchangeOptions {
	return tokencache.ExchangeOptions{
		Name:         name,
		Identity:     client.CacheKey(),
		Scopes:       scopes,
		MaxEntries:   maxUsers,
		Tenants:      tenants,
		HashKey:      hashKey,
		Rejected:     RejectedUserToken,
		VerifyShared: verifySharedFunc(client.ClientID()),
		// Never leaves the process (the fleet's backoffs bind no credential).
		CredentialIDFunc: credentialIDFunc(client, hashKey),
	}
}

// verifySharedFunc checks an exchanged token another replica shared
// against the user token it is for: a JWT must name the same user (oid),
// tenant (tid) and client (appid or azp) as the exchange would. An opaque
// token passes (entries are shared only through a sealed store).
func verifySharedFunc(clientID string) func(rec *tokencache.Record, userToken string) error {
	return func(rec *tokencache.Record, userToken string) error {
		got, ok := entra.ReadPublicClaims(rec.AccessToken)
		if !ok {
			return nil
		}
		user, _ := entra.ReadPublicClaims(userToken)
		switch {
		case !strings.EqualFold(got.ObjectID, user.ObjectID):
			return errors.New("the exchanged token names another user (oid) than the user token")
		case !strings.EqualFold(got.TenantID, user.TenantID):
			return errors.New("the exchanged token names another tenant (tid) than the user token")
		case !strings.EqualFold(got.AppID, clientID):
			return errors.New("the exchanged token was issued to another client (appid, azp) than the application")
		}
		return nil
	}
}

// ExchangeFunc exchanges a checked user's token for a token to scopes.
func ExchangeFunc(client *entra.Client, user *entra.UserAssertion, scopes []string) tokencache.FetchFunc {
	return func(ctx context.Context) (tokencache.Fetched, error) {
		token, err := client.OnBehalfOf(ctx, user, scopes)
		if err != nil {
			return tokencache.Fetched{}, err
		}
		return tokencache.Fetched{AccessToken: token.AccessToken, ExpiresAt: token.ExpiresAt}, nil
	}
}

// RejectedUserToken reports whether err is Entra's refusal of the user,
// and how long to answer the same user token with it.
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
