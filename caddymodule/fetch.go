package caddymodule

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/tokencache"
)

// fetchFunc returns the function the cache calls to get a new token for one
// application. It logs a failure with what an operator needs to look it up
// (status, error, AADSTS codes, trace and correlation IDs), never the token
// or the secret; the cache logs successful fetches.
func fetchFunc(client *entra.Client, application string, scopes []string, logger *zap.Logger) tokencache.FetchFunc {
	m := metrics()
	return func(ctx context.Context) (tokencache.Fetched, error) {
		start := time.Now()
		token, err := client.Token(ctx, scopes)
		m.tokenRequestDuration.WithLabelValues(application).Observe(time.Since(start).Seconds())
		m.tokenRequests.WithLabelValues(application, tokenRequestResult(err)).Inc()
		if err != nil {
			logger.Error("token request failed", append(requestErrorFields(err),
				zap.String("application", application),
				zap.String("token_endpoint", client.TokenEndpoint()))...)
			return tokencache.Fetched{}, err
		}
		return tokencache.Fetched{AccessToken: token.AccessToken, ExpiresAt: token.ExpiresAt, RefreshIn: token.RefreshIn}, nil
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
