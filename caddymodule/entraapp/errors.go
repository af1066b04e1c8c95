package entraapp

import (
	"errors"
	"fmt"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddy-entra/caddy-entra/entra"
)

// Error codes, better-auth-client-credential's. Errors never carry a value
// that could be a secret.
const (
	CodeApplicationNotFound   = "MICROSOFT_APPLICATION_NOT_FOUND"   // 404
	CodeProviderNotConfigured = "MICROSOFT_PROVIDER_NOT_CONFIGURED" // 500
	CodeProviderInvalidConfig = "MICROSOFT_PROVIDER_INVALID_CONFIG" // 500
	CodeTokenRequestFailed    = "MICROSOFT_TOKEN_REQUEST_FAILED"    // 502, or 503 while paused
)

// Error codes of on-behalf-of applications, answered with a challenge.
const (
	CodeUserTokenMissing    = "MICROSOFT_USER_TOKEN_MISSING"   // 401: no bearer token, or not a JWT
	CodeUserTokenInvalid    = "MICROSOFT_USER_TOKEN_INVALID"   // 401: expired, foreign, or refused
	CodeInteractionRequired = "MICROSOFT_INTERACTION_REQUIRED" // 401 insufficient_claims
	CodeConsentRequired     = "MICROSOFT_CONSENT_REQUIRED"     // 403 proposedAction="consent"
)

// CodeOnBehalfOfApplication is the admin API's 409 for a refresh or purge
// of an on-behalf-of application, which has no token of its own.
const CodeOnBehalfOfApplication = "ON_BEHALF_OF_APPLICATION"

// ConfigError is a configuration error naming the field.
func ConfigError(field, reason string) error {
	return fmt.Errorf("%s: %s: %s", CodeProviderInvalidConfig, field, reason)
}

// prefixConfigError is ConfigError of an entra error, within block prefix.
func prefixConfigError(prefix string, err error) error {
	var ce *entra.ConfigError
	if errors.As(err, &ce) {
		return ConfigError(prefix+ce.Field, ce.Reason)
	}
	return ConfigError(prefix+"credential", err.Error())
}

// FromContext is how a handler's Provision finds the entra app, after
// registering the app's and the handler's collectors.
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
// naming where it was used and the configured names.
func (a *App) RequireApplication(where, name string) error {
	if _, ok := a.Applications[name]; ok {
		return nil
	}
	return fmt.Errorf("%s: %s: application %q is not configured (configured: %s)",
		CodeApplicationNotFound, where, name, a.configuredNames())
}
