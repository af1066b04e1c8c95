package entraapp

import (
	"errors"
	"fmt"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddy-entra/caddy-entra/entra"
)

// The errors a config is rejected with at load carry the error codes of the
// Node library better-auth-client-credential (ConfigError, FromContext,
// RequireApplication), and never a value that could be a secret.

// Error codes, the same as better-auth-client-credential's.
const (
	// CodeApplicationNotFound: the application name is not configured (404).
	CodeApplicationNotFound = "MICROSOFT_APPLICATION_NOT_FOUND"
	// CodeProviderNotConfigured: no Entra provider is configured (500).
	CodeProviderNotConfigured = "MICROSOFT_PROVIDER_NOT_CONFIGURED"
	// CodeProviderInvalidConfig: tenant, client or credential missing or malformed (500).
	CodeProviderInvalidConfig = "MICROSOFT_PROVIDER_INVALID_CONFIG"
	// CodeTokenRequestFailed: no valid token could be had from the token
	// endpoint (502, or 503 with Retry-After while paused: see AnswerFor).
	CodeTokenRequestFailed = "MICROSOFT_TOKEN_REQUEST_FAILED"
)

// Error codes of on-behalf-of applications, answered with a
// WWW-Authenticate challenge the user's client can act on.
const (
	// CodeUserTokenMissing: the request carries no bearer token, or one
	// that is not a JWT (401, Bearer error="invalid_token").
	CodeUserTokenMissing = "MICROSOFT_USER_TOKEN_MISSING"
	// CodeUserTokenInvalid: the user's token is expired, of another
	// tenant or audience, or Entra refused it (401, Bearer
	// error="invalid_token").
	CodeUserTokenInvalid = "MICROSOFT_USER_TOKEN_INVALID"
	// CodeInteractionRequired: the user must satisfy a claims challenge
	// (multi-factor authentication, conditional access): 401 with
	// error="insufficient_claims" and the claims.
	CodeInteractionRequired = "MICROSOFT_INTERACTION_REQUIRED"
	// CodeConsentRequired: the user or an administrator must consent to
	// the scopes: 403 with proposedAction="consent".
	CodeConsentRequired = "MICROSOFT_CONSENT_REQUIRED"
)

// ConfigError is a configuration error with better-auth-client-credential's
// code, naming the field.
func ConfigError(field, reason string) error {
	return fmt.Errorf("%s: %s: %s", CodeProviderInvalidConfig, field, reason)
}

// prefixConfigError is ConfigError for an error of the entra package,
// naming the field within its block (prefix).
func prefixConfigError(prefix string, err error) error {
	var ce *entra.ConfigError
	if errors.As(err, &ce) {
		return ConfigError(prefix+ce.Field, ce.Reason)
	}
	return ConfigError(prefix+"credential", err.Error())
}

// FromContext is how a handler's Provision finds the entra app its
// directive needs, after registering the app's and the handler's metric
// collectors.
func FromContext(ctx caddy.Context, directive string, collectors ...prometheus.Collector) (*App, error) {
	if err := RegisterMetrics(ctx.GetMetricsRegistry(), collectors...); err != nil {
		return nil, fmt.Errorf("registering metrics: %v", err)
	}
	appIface, err := ctx.AppIfConfigured("entra")
	if errors.Is(err, caddy.ErrNotConfigured) {
		return nil, fmt.Errorf("%s: %s is used but no entra app is configured (add an entra block to the global options)",
			CodeProviderNotConfigured, directive)
	}
	if err != nil {
		return nil, fmt.Errorf("getting the entra app: %v", err)
	}
	return appIface.(*App), nil
}

// RequireApplication rejects an application name that is not configured,
// naming where it was used (e.g. "entra_token") and the configured names.
func (a *App) RequireApplication(where, name string) error {
	if _, ok := a.Applications[name]; ok {
		return nil
	}
	return fmt.Errorf("%s: %s: application %q is not configured (configured: %s)",
		CodeApplicationNotFound, where, name, a.configuredNames())
}
