package caddymodule

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

// fetchObserver returns the application's tokencache OnFetch: it counts each
// token request by the cache's classification of its outcome (the one its
// backoff obeys), times it, and logs a failure with what an operator needs
// to look it up (status, error, AADSTS codes, trace and correlation IDs),
// never the token or the secret; the cache logs successful fetches.
func fetchObserver(application, tokenEndpoint string, logger *zap.Logger) func(tokencache.FetchOutcome) {
	m := metrics()
	return func(o tokencache.FetchOutcome) {
		m.tokenRequestDuration.WithLabelValues(application).Observe(o.Duration.Seconds())
		m.tokenRequests.WithLabelValues(application, string(o.Result)).Inc()
		if o.Err != nil {
			logger.Error("token request failed", append(requestErrorFields(o.Err),
				zap.String("application", application),
				zap.String("result", string(o.Result)),
				zap.String("token_endpoint", tokenEndpoint))...)
		}
	}
}

// requestErrorFields turns a token request failure into log fields.
func requestErrorFields(err error) []zap.Field {
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
