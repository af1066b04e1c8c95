package entra

import (
	"encoding/base64"
	"net/url"
)

// The ways a client secret is presented to the token endpoint
// (Config.ClientAuth, Caddyfile client_auth).
const (
	// ClientAuthPost sends client_secret in the form body
	// (client_secret_post), as Entra's own libraries do. The default.
	ClientAuthPost = "post"
	// ClientAuthBasic sends the client ID and secret in an HTTP Basic
	// Authorization header (client_secret_basic, RFC 6749 section 2.3.1),
	// which RFC 6749 recommends and many OAuth 2.0 servers require.
	ClientAuthBasic = "basic"
)

// checkClientAuth checks Config.ClientAuth against the credential.
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
	}
	return &ConfigError{Field: "client_auth", Reason: "must be post or basic"}
}

// basicAuthorization is the Authorization header value of
// client_secret_basic: RFC 6749 section 2.3.1 has the client ID and the
// secret encoded with application/x-www-form-urlencoded (a space becomes
// '+', '+' becomes %2B, ':' becomes %3A) before they are joined by ':' and
// base64-encoded, so that a ':' in either survives.
func basicAuthorization(clientID, secret string) string {
	credentials := url.QueryEscape(clientID) + ":" + url.QueryEscape(secret)
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(credentials))
}
