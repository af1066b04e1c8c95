package entra

import (
	"encoding/base64"
	"net/url"
	"slices"
	"strings"
)

// The ways a credential is presented to the token endpoint (Config.ClientAuth,
// Caddyfile client_auth).
const (
	// ClientAuthPost sends client_secret in the form body
	// (client_secret_post), as Entra's own libraries do. The default.
	ClientAuthPost = "post"
	// ClientAuthBasic sends the client ID and secret in an HTTP Basic
	// Authorization header (client_secret_basic, RFC 6749 2.3.1), which
	// many OAuth 2.0 servers require.
	ClientAuthBasic = "basic"
	// ClientAuthTLS presents the client certificate, issued by a CA, on the
	// TLS connection (RFC 8705 tls_client_auth); the form carries client_id
	// only. Entra ID does not offer it to applications.
	ClientAuthTLS = "tls_client_auth"
	// ClientAuthSelfSignedTLS is ClientAuthTLS with a certificate the server
	// knows from the client's registration.
	ClientAuthSelfSignedTLS = "self_signed_tls_client_auth"
)

func isMutualTLS(clientAuth string) bool {
	return clientAuth == ClientAuthTLS || clientAuth == ClientAuthSelfSignedTLS
}

func checkClientAuth(cfg Config) error {
	switch cfg.ClientAuth {
	case "", ClientAuthPost:
		return nil
	case ClientAuthBasic:
		if cfg.ClientSecret == "" {
			return &ConfigError{Field: "client_auth", Reason: "basic sends the client secret in an Authorization header, " +
				"so it needs client_secret; this identity authenticates otherwise (remove client_auth)"}
		}
		return nil
	case ClientAuthTLS, ClientAuthSelfSignedTLS:
		return checkMutualTLS(cfg)
	}
	return &ConfigError{Field: "client_auth", Reason: "must be post, basic, tls_client_auth or self_signed_tls_client_auth"}
}

// checkMutualTLS requires a client certificate, presented over https to a
// token endpoint that is not Entra's.
func checkMutualTLS(cfg Config) error {
	if cfg.ClientCertificate == nil {
		return &ConfigError{Field: "client_auth", Reason: cfg.ClientAuth + " presents the client certificate on the TLS connection, " +
			"so it needs client_certificate"}
	}
	if cfg.TokenEndpoint == "" || isEntraEndpoint(cfg.TokenEndpoint) {
		return &ConfigError{Field: "client_auth", Reason: "Entra ID does not offer mutual TLS client authentication (RFC 8705) " +
			"to applications; for Entra, client_certificate without client_auth signs a client assertion with the certificate. " +
			cfg.ClientAuth + " is for another OAuth 2.0 server's token_endpoint"}
	}
	if u, reason := parseEndpointURL(cfg.TokenEndpoint, true); reason == "" && u.Scheme != "https" {
		return &ConfigError{Field: "client_auth", Reason: cfg.ClientAuth + " needs an https token_endpoint: the certificate is presented in the TLS handshake"}
	}
	return nil
}

// isEntraEndpoint reports whether a token endpoint is Entra's: shaped as
// Entra's (/{tenant}/oauth2/v2.0/token), or on an Entra host (entraHosts).
func isEntraEndpoint(tokenEndpoint string) bool {
	if base, _ := entraTenantBase(tokenEndpoint); base != "" {
		return true
	}
	return isEntraHost(tokenEndpoint)
}

// isEntraHost reports whether rawURL's host is one of Entra ID's.
func isEntraHost(rawURL string) bool {
	u, err := url.Parse(rawURL)
	if err != nil {
		return false
	}
	host := strings.TrimSuffix(u.Hostname(), ".")
	return slices.ContainsFunc(entraHosts, func(entra string) bool { return strings.EqualFold(entra, host) })
}

// basicAuthorization is the Authorization header of client_secret_basic:
// RFC 6749 2.3.1 form-encodes the client ID and the secret before joining
// them with ':', so that a ':' in either survives.
func basicAuthorization(clientID, secret string) string {
	credentials := url.QueryEscape(clientID) + ":" + url.QueryEscape(secret)
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(credentials))
}
