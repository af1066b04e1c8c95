// Package entra requests OAuth 2.0 client-credentials access tokens from
// Microsoft Entra ID (or any compatible token endpoint) and turns the
// endpoint's answers into a [Token] or a [RequestError].
//
// The package knows nothing of Caddy, Redis or caching: a [Client] sends one
// token request per call to [Client.Token]. Secrets and access tokens never
// appear in the messages of the errors it returns, and [Token] redacts its
// access token whenever it is formatted.
package entra

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DefaultAuthorityHost is the authority used when Config.AuthorityHost is
// empty: the Entra ID global (public) cloud. Sovereign clouds use other hosts,
// e.g. https://login.microsoftonline.us.
const DefaultAuthorityHost = "https://login.microsoftonline.com"

// DefaultTimeout is the per-request timeout used when Config.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// MaxResponseBytes is the largest token endpoint response body the client
// reads (1 MiB). A larger body fails the request.
const MaxResponseBytes = 1 << 20

// Config configures one client-credentials identity (an app registration in
// one tenant) and how to reach its token endpoint.
type Config struct {
	// TenantID is the directory (tenant) ID or a verified domain name. It is
	// required unless TokenEndpoint is set, and must be a single safe URL path
	// segment (letters, digits, '.', '-', '_').
	TenantID string

	// ClientID is the application (client) ID of the app registration.
	// Required.
	ClientID string

	// ClientSecret is the client secret value (not its ID). Required. It is
	// sent only in the form body of token requests and never appears in an
	// error message.
	ClientSecret string

	// AuthorityHost is the scheme and host (and optionally a path prefix) of
	// the authority; a trailing slash is tolerated. The token endpoint is
	// {AuthorityHost}/{TenantID}/oauth2/v2.0/token. Default
	// DefaultAuthorityHost. Ignored when TokenEndpoint is set.
	AuthorityHost string

	// TokenEndpoint is an optional full URL of the token endpoint. When set it
	// overrides AuthorityHost and TenantID. Default: derived from
	// AuthorityHost and TenantID.
	TokenEndpoint string

	// Timeout bounds each token request, from sending it to reading the whole
	// response. Default DefaultTimeout. Negative values are rejected.
	Timeout time.Duration

	// HTTPClient sends the token requests. Default: a dedicated client with a
	// clone of http.DefaultTransport (so proxy environment variables apply)
	// that does not follow redirects, so the client secret is never re-posted
	// to another location.
	HTTPClient *http.Client
}

// ConfigError names a Config field that is missing or malformed. Field uses
// the Caddyfile names (tenant_id, client_id, client_secret, authority_host,
// token_endpoint, timeout). Its message names the field and the cause, never
// the field's value.
type ConfigError struct {
	// Field is the Caddyfile name of the offending field, e.g. "client_secret".
	Field string
	// Reason says what is wrong, e.g. "is required".
	Reason string
}

// Error returns e.g. "entra: client_secret: is required".
func (e *ConfigError) Error() string {
	return "entra: " + e.Field + ": " + e.Reason
}

// NewClient validates cfg, applies defaults and returns a Client. Validation
// failures are returned as *ConfigError:
//   - client_id and client_secret are required;
//   - tenant_id is required unless token_endpoint is set, and must be a safe
//     path segment whenever it is set;
//   - authority_host and token_endpoint must be absolute http or https URLs
//     with a host, without user information or fragment.
func NewClient(cfg Config) (*Client, error) {
	if strings.TrimSpace(cfg.ClientID) == "" {
		return nil, &ConfigError{Field: "client_id", Reason: "is required"}
	}
	if hasControlOrSpace(cfg.ClientID) {
		return nil, &ConfigError{Field: "client_id", Reason: "must not contain spaces or control characters"}
	}
	if cfg.ClientSecret == "" {
		return nil, &ConfigError{Field: "client_secret", Reason: "is required"}
	}
	if cfg.Timeout < 0 {
		return nil, &ConfigError{Field: "timeout", Reason: "must not be negative"}
	}
	if cfg.TenantID != "" {
		if reason := checkTenantID(cfg.TenantID); reason != "" {
			return nil, &ConfigError{Field: "tenant_id", Reason: reason}
		}
	}

	var endpoint string
	if cfg.TokenEndpoint != "" {
		u, reason := parseEndpointURL(cfg.TokenEndpoint)
		if reason != "" {
			return nil, &ConfigError{Field: "token_endpoint", Reason: reason}
		}
		endpoint = u.String()
	} else {
		if strings.TrimSpace(cfg.TenantID) == "" {
			return nil, &ConfigError{Field: "tenant_id", Reason: "is required unless token_endpoint is set"}
		}
		authority := cfg.AuthorityHost
		if authority == "" {
			authority = DefaultAuthorityHost
		}
		u, reason := parseEndpointURL(authority)
		if reason != "" {
			return nil, &ConfigError{Field: "authority_host", Reason: reason}
		}
		if u.RawQuery != "" || u.ForceQuery {
			return nil, &ConfigError{Field: "authority_host", Reason: "must not have a query"}
		}
		u.Path = strings.TrimRight(u.Path, "/") + "/" + cfg.TenantID + "/oauth2/v2.0/token"
		u.RawPath = ""
		endpoint = u.String()
	}

	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	httpClient := cfg.HTTPClient
	if httpClient == nil {
		httpClient = newDefaultHTTPClient()
	}
	cfg.Timeout = timeout
	cfg.HTTPClient = httpClient
	return &Client{
		cfg:           cfg,
		tokenEndpoint: endpoint,
		now:           time.Now,
	}, nil
}

// newDefaultHTTPClient returns the client used when Config.HTTPClient is nil.
// Redirects are not followed: a 307/308 would re-send the form, secret
// included, to wherever the redirect points.
func newDefaultHTTPClient() *http.Client {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 4
	transport.ResponseHeaderTimeout = 0 // the per-request context deadline bounds it
	return &http.Client{
		Transport: transport,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// checkTenantID returns why id is not a safe path segment, or "".
func checkTenantID(id string) string {
	if id == "." || id == ".." {
		return "must be a tenant ID or domain name"
	}
	for _, r := range id {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
		default:
			return "must contain only letters, digits, '.', '-' and '_'"
		}
	}
	return ""
}

// parseEndpointURL parses an absolute http(s) URL. It returns a reason and
// never the raw value: a URL may carry user information.
func parseEndpointURL(raw string) (*url.URL, string) {
	if hasControlOrSpace(raw) {
		return nil, "must be a URL without spaces or control characters"
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, "is not a valid URL"
	}
	switch strings.ToLower(u.Scheme) {
	case "http", "https":
		u.Scheme = strings.ToLower(u.Scheme)
	case "":
		return nil, "must be an absolute URL with an http or https scheme"
	default:
		return nil, "must use the http or https scheme"
	}
	if u.Opaque != "" || u.Host == "" || u.Hostname() == "" {
		return nil, "must have a host"
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, "has an invalid port"
		}
	}
	if u.User != nil {
		return nil, "must not contain user information"
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return nil, "must not have a fragment"
	}
	return u, ""
}

func hasControlOrSpace(s string) bool {
	for _, r := range s {
		if r <= ' ' || r == 0x7f {
			return true
		}
	}
	return false
}
