// Package binding binds an entra token client to the token cache: the
// tokencache.Application of one configured application (how its token is
// fetched, how a record read from the shared store is verified, what its
// records are keyed by), and what a managed identity's first token teaches.
// It imports no Caddy: the entra app (caddymodule/entraapp) builds on it.
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

// Application is the tokencache.Application of the application name, whose
// tokens client gets for scopes, keyed by CacheKey, without OnFetch and
// OnStoreDrop (the caller's). fingerprintKey keys its credential ID: the
// key that seals the store's records, empty when they are not sealed, and
// then a tenant configured by domain name is resolved through its OpenID
// configuration before a record is checked (tenantResolver); sealed
// records are authenticated and need no such round trip. learned, if not
// nil, is called after each successful fetch (Rekeyer.Learned).
func Application(name string, client *entra.Client, scopes []string, fingerprintKey []byte, learned func(error)) tokencache.Application {
	tokenIdentity := tokenIdentityFor(client)
	audience := audienceFor(client, scopes)
	cacheKey, _ := CacheKey(client)
	var resolveTenant func()
	if len(fingerprintKey) == 0 {
		resolveTenant = tenantResolver(client, tokenIdentity)
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

// fetchFunc returns the function the cache calls to get a new token for one
// application.
func fetchFunc(client *entra.Client, scopes []string) tokencache.FetchFunc {
	return func(ctx context.Context) (tokencache.Fetched, error) {
		token, err := client.Token(ctx, scopes)
		if err != nil {
			return tokencache.Fetched{}, err
		}
		return tokencache.Fetched{AccessToken: token.AccessToken, ExpiresAt: token.ExpiresAt, RefreshIn: token.RefreshIn}, nil
	}
}

// RequestErrorFields are the log fields of a token request failure: what
// an operator needs to look it up (status, error, AADSTS codes, trace and
// correlation IDs, Retry-After), never the token or the secret.
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

// credentialIDFunc fingerprints the credential a client uses at the moment,
// so that a permanent failure shared through Redis (a wrong secret) pauses
// only the replicas with that same credential, not those already rotated to
// a good one (a new secret, or a certificate renewed on disk). It is a
// SHA-256 of the client's own digest salted with its identity — an
// HMAC-SHA-256 under key when Redis records are encrypted, so that reading
// Redis does not allow testing guesses of a weak secret — truncated, and
// never logged.
func credentialIDFunc(client *entra.Client, key []byte) func() string {
	identity := client.CacheKey()
	return func() string {
		mac := hmac.New(sha256.New, key) // an empty key: a plain salted hash
		fmt.Fprintf(mac, "caddy-entra credential v1\n%s\n%s", identity, client.CredentialFingerprint())
		return hex.EncodeToString(mac.Sum(nil)[:12])
	}
}
