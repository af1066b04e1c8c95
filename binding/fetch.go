// Package binding binds an entra token client to the token cache: how an
// application's token is fetched, verified when read from the store and
// keyed. It imports no Caddy.
package binding

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/tokencache"
)

// Application is the tokencache.Application (without OnFetch and
// OnStoreDrop) whose tokens client gets for scopes. fingerprintKey is the
// key sealing the store's records, if any; unsealed records need the
// tenant resolved before they are checked. learned, if not nil, is called
// after each successful fetch (Rekeyer.Learned). logger is told of the
// tenant's resolution (ResolveTenant).
func Application(name string, client *entra.Client, scopes []string, fingerprintKey []byte, learned func(error), logger *zap.Logger) tokencache.Application {
	tokenIdentity := tokenIdentityFor(client)
	audience := audienceFor(client, scopes)
	cacheKey, _ := CacheKey(client)
	var resolveTenant func()
	if len(fingerprintKey) == 0 {
		resolveTenant = tenantResolver(client, tokenIdentity, logger)
	}
	return tokencache.Application{
		Name:             name,
		CredentialIDFunc: credentialIDFunc(client, fingerprintKey),
		CacheKey:         cacheKey,
		Scopes:           scopes,
		VerifyStored:     verifyStoredFunc(tokenIdentity, scopes, audience, resolveTenant),
		Fetch:            learningFetch(fetchFunc(client, scopes), tokenIdentity, audience, learned),
	}
}

func fetchFunc(client *entra.Client, scopes []string) tokencache.FetchFunc {
	return func(ctx context.Context) (tokencache.Fetched, error) {
		token, err := client.Token(ctx, scopes)
		if err != nil {
			return tokencache.Fetched{}, err
		}
		return tokencache.Fetched{AccessToken: token.AccessToken, ExpiresAt: token.ExpiresAt, RefreshIn: token.RefreshIn}, nil
	}
}

// RequestErrorFields are the log fields that look a token request failure
// up, never the token or the secret.
func RequestErrorFields(err error) []zap.Field {
	var re *entra.RequestError
	if !errors.As(err, &re) {
		return []zap.Field{zap.Error(err)}
	}
	fields := []zap.Field{zap.Error(err), zap.Int("status", re.StatusCode)}
	if re.Code != "" {
		fields = append(fields, zap.String("error_code", re.Code))
	}
	if len(re.ErrorCodes) > 0 {
		fields = append(fields, zap.Ints("aadsts", re.ErrorCodes))
	}
	if re.TraceID != "" {
		fields = append(fields, zap.String("trace_id", re.TraceID))
	}
	if re.CorrelationID != "" {
		fields = append(fields, zap.String("correlation_id", re.CorrelationID))
	}
	if re.RetryAfter > 0 {
		fields = append(fields, zap.Duration("retry_after", re.RetryAfter))
	}
	return fields
}

// The entra client's errors tell the cache how to retry.
var _ tokencache.FetchError = (*entra.RequestError)(nil)

// credentialIDFunc fingerprints the client's current credential, so a
// permanent failure shared through Redis pauses only replicas with that
// credential. Keyed (HMAC) when records are sealed, so reading Redis does
// not allow testing guesses of a weak secret.
func credentialIDFunc(client *entra.Client, key []byte) func() string {
	identity := client.CacheKey()
	return func() string {
		mac := hmac.New(sha256.New, key) // an empty key: a plain salted hash
		fmt.Fprintf(mac, "caddy-entra credential v1\n%s\n%s", identity, client.FailureFingerprint())
		return hex.EncodeToString(mac.Sum(nil)[:12])
	}
}
