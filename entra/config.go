// Package entra requests OAuth 2.0 client-credentials access tokens from
// Microsoft Entra ID (or any compatible token endpoint) and turns the
// endpoint's answers into a [Token] or a [RequestError]. An identity
// authenticates with exactly one credential: a client secret, a certificate
// ([CertificateCredential], a fresh PS256 client assertion per request), a
// federated token file (workload identity, [WorkloadIdentityFromEnv]) or the
// host's managed identity ([ManagedIdentityCredential]). A [RequestError]
// says whether a failure is permanent and how long the endpoint asked to
// wait ([RequestError.PermanentFailure], [RequestError.RetryAfterHint]).
//
// An application can also exchange a signed-in user's token for a token on
// the user's behalf (Entra's on-behalf-of flow): [ReadUserAssertion] checks
// the user's token locally, [Client.OnBehalfOf] exchanges it, and
// [RequestError.UserFailure] tells what a refusal asks of the user's client
// (a new token, a claims challenge, consent).
//
// The package knows nothing of Caddy, Redis or caching: a [Client] sends one
// token request per call to [Client.Token] or [Client.OnBehalfOf]. Secrets,
// users' tokens and access tokens never appear in the messages of the
// errors it returns, and [Token] redacts its access token whenever it is
// formatted.
package entra

import (
	"net/http"
	"net/netip"
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

// SovereignAuthorityHosts are the authority hosts of the Entra ID national
// clouds, by the names azidentity gives them. They are documentation: set
// Config.AuthorityHost to one of the values. Changing the map has no effect.
var SovereignAuthorityHosts = map[string]string{
	"AzurePublic":       "https://login.microsoftonline.com",
	"AzureUSGovernment": "https://login.microsoftonline.us",
	"AzureChina":        "https://login.partner.microsoftonline.cn",
}

// Config configures one identity (an app registration in one tenant, or a
// managed identity) and how to reach its token endpoint.
//
// Exactly one credential must be set: ClientSecret, ClientCertificate,
// FederatedTokenFile or ManagedIdentity.
type Config struct {
	// TenantID is the directory (tenant) ID or a verified domain name. It is
	// required unless TokenEndpoint or ManagedIdentity is set, and must be a
	// single safe URL path segment (letters, digits, '.', '-', '_'). Ignored
	// with ManagedIdentity.
	TenantID string

	// ClientID is the application (client) ID of the app registration.
	// Required, except with ManagedIdentity, where it is optional and names a
	// user-assigned identity (see ManagedIdentityCredential.ClientID).
	ClientID string

	// ClientSecret is the client secret value (not its ID). It is sent in
	// the form body of token requests, or in their Authorization header
	// with ClientAuth "basic", and never appears in an error message.
	ClientSecret string

	// ClientAuth is how the credential is presented to the token endpoint
	// (Caddyfile client_auth): ClientAuthPost ("post",
	// client_secret_post: client_secret in the form body) or
	// ClientAuthBasic ("basic", client_secret_basic: RFC 6749 section
	// 2.3.1, HTTP Basic authentication of the form-encoded client ID and
	// secret, and no client_secret in the body), which need ClientSecret;
	// or ClientAuthTLS / ClientAuthSelfSignedTLS (RFC 8705 mutual TLS:
	// ClientCertificate presented in the TLS handshake to an https token
	// endpoint that is not Entra's, through a transport of the client's
	// own, and the form carries client_id only). Default "" (post for a
	// client secret, a signed client assertion for a certificate).
	ClientAuth string

	// ClientCertificate authenticates with a certificate registered on the
	// app: every token request carries a freshly signed client assertion.
	ClientCertificate *CertificateCredential

	// FederatedTokenFile is the path of a file whose content is a token from
	// a federated identity provider (workload identity federation, e.g. the
	// Kubernetes service account token that azure-workload-identity
	// projects). The file is read again for every token request, so the
	// kubelet's rotations need no restart. See WorkloadIdentityFromEnv.
	FederatedTokenFile string

	// ManagedIdentity gets tokens from the Azure managed identity endpoint of
	// the host (IMDS, or App Service / Container Apps) instead of a token
	// endpoint. TenantID, AuthorityHost and TokenEndpoint are then ignored.
	ManagedIdentity *ManagedIdentityCredential

	// ExtraParams are extra form fields sent with every token request
	// (Caddyfile token_request_param), e.g. "resource" for generic OAuth 2.0
	// servers. They may not set grant_type, client_id, client_secret,
	// client_assertion, client_assertion_type or scope, and are not supported
	// with ManagedIdentity. Default none.
	ExtraParams map[string]string

	// ClientCapabilities are the client capabilities the application
	// declares (Caddyfile client_capabilities), e.g. "cp1" for continuous
	// access evaluation: every token request then carries the claims
	// parameter {"access_token":{"xms_cc":{"values":[...]}}}, so that
	// CAE-aware resources issue long-lived tokens and answer revocations
	// with claims challenges. Not supported with ManagedIdentity. Default
	// none.
	ClientCapabilities []string

	// AuthorityHost is the scheme and host (and optionally a path prefix) of
	// the authority; a trailing slash is tolerated. The token endpoint is
	// {AuthorityHost}/{TenantID}/oauth2/v2.0/token. It must use https; http
	// is allowed only for loopback hosts (tests, local emulators). Default
	// DefaultAuthorityHost; see SovereignAuthorityHosts for the national
	// clouds. Ignored when TokenEndpoint is set.
	AuthorityHost string

	// TokenEndpoint is an optional full URL of the token endpoint. When set it
	// overrides AuthorityHost and TenantID. Like AuthorityHost it must use
	// https unless its host is loopback. Default: derived from AuthorityHost
	// and TenantID.
	TokenEndpoint string

	// Timeout bounds each token request, from sending it to reading the whole
	// response. Default DefaultTimeout. Negative values are rejected.
	Timeout time.Duration

	// HTTPClient sends the token requests. Default: the process-wide client
	// that every Client without one shares (transport.go: connections kept
	// per authority, HTTP/2 where offered, proxy environment variables
	// apply), which does not follow redirects, so a credential is never
	// re-posted to another location.
	HTTPClient *http.Client
}

// ConfigError names a Config field that is missing or malformed. Field uses
// the Caddyfile names (tenant_id, client_id, client_secret, client_auth, credential,
// client_certificate, federated_token_file, managed_identity,
// workload_identity, token_request_param, client_capabilities,
// authority_host, token_endpoint, timeout, on_behalf_of). Its message names
// the field and the cause, never the field's value.
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
//   - exactly one credential (client_secret, client_certificate,
//     federated_token_file, managed_identity) must be set (field
//     "credential");
//   - client_auth must be "", "post", "basic", "tls_client_auth" or
//     "self_signed_tls_client_auth"; "basic" needs a client_secret, the
//     last two a client_certificate and an https token_endpoint that is
//     not Entra's (Entra does not offer mutual TLS to applications);
//   - client_id is required except for a managed identity;
//   - tenant_id is required unless token_endpoint is set, and must be a safe
//     path segment whenever it is set (not checked for a managed identity);
//   - authority_host and token_endpoint must be absolute https URLs with a
//     host (http only for loopback hosts), without user information or
//     fragment;
//   - a client certificate must load: a certificate and its matching RSA
//     private key;
//   - token_request_param may not override the fields the client sets.
func NewClient(cfg Config) (*Client, error) {
	if err := checkOneCredential(cfg); err != nil {
		return nil, err
	}
	if err := checkClientAuth(cfg); err != nil {
		return nil, err
	}
	if cfg.Timeout < 0 {
		return nil, &ConfigError{Field: "timeout", Reason: "must not be negative"}
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	callerClient := cfg.HTTPClient
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = sharedHTTPClient()
	}

	if cfg.ManagedIdentity != nil {
		mi, err := newManagedIdentity(&cfg)
		if err != nil {
			return nil, err
		}
		cfg.TenantID, cfg.ClientID = "", mi.clientID
		return &Client{cfg: cfg, tokenEndpoint: mi.endpoint, source: mi}, nil
	}

	if strings.TrimSpace(cfg.ClientID) == "" {
		return nil, &ConfigError{Field: "client_id", Reason: "is required"}
	}
	if hasControlOrSpace(cfg.ClientID) {
		return nil, &ConfigError{Field: "client_id", Reason: "must not contain spaces or control characters"}
	}
	if cfg.TenantID != "" {
		if reason := checkTenantID(cfg.TenantID); reason != "" {
			return nil, &ConfigError{Field: "tenant_id", Reason: reason}
		}
	}
	endpoint, err := resolveTokenEndpoint(cfg)
	if err != nil {
		return nil, err
	}
	if err := checkExtraParams(cfg.ExtraParams); err != nil {
		return nil, err
	}
	claims, err := capabilitiesClaims(cfg)
	if err != nil {
		return nil, err
	}

	form := formCredential{clientID: cfg.ClientID, extraParams: cfg.ExtraParams}
	var source tokenSource
	switch {
	case cfg.ClientSecret != "":
		source = secretCredential{formCredential: form, secret: cfg.ClientSecret, basic: cfg.ClientAuth == ClientAuthBasic}
	case cfg.ClientCertificate != nil && isMutualTLS(cfg.ClientAuth):
		base, checkRedirect, err := mutualTLSBase(callerClient)
		if err != nil {
			return nil, err
		}
		cred, err := newTLSCredential(*cfg.ClientCertificate, form, base)
		if err != nil {
			return nil, err
		}
		cfg.HTTPClient = &http.Client{Transport: cred.transport, CheckRedirect: checkRedirect}
		source = cred
	case cfg.ClientCertificate != nil:
		cred, err := newCertificateCredential(*cfg.ClientCertificate, form)
		if err != nil {
			return nil, err
		}
		source = cred
	case cfg.FederatedTokenFile != "":
		source = federatedCredential{formCredential: form, path: cfg.FederatedTokenFile}
	}
	return &Client{cfg: cfg, tokenEndpoint: endpoint, source: source, claims: claims}, nil
}

// capabilitiesClaims checks client_capabilities and returns the claims
// parameter that declares them, "" for none.
func capabilitiesClaims(cfg Config) (string, error) {
	if len(cfg.ClientCapabilities) == 0 {
		return "", nil
	}
	for _, capability := range cfg.ClientCapabilities {
		if capability == "" || hasControlOrSpace(capability) || strings.ContainsAny(capability, `"\`) {
			return "", &ConfigError{Field: "client_capabilities", Reason: "each capability must be non-empty, without spaces, quotes or control characters"}
		}
	}
	if _, ok := cfg.ExtraParams["claims"]; ok {
		return "", &ConfigError{Field: "token_request_param", Reason: "cannot set claims with client_capabilities, which sets it"}
	}
	return MergeClaims("", cfg.ClientCapabilities)
}

// checkOneCredential enforces exactly one credential per identity.
func checkOneCredential(cfg Config) error {
	var set []string
	if cfg.ClientSecret != "" {
		set = append(set, "client_secret")
	}
	if cfg.ClientCertificate != nil {
		set = append(set, "client_certificate")
	}
	if cfg.FederatedTokenFile != "" {
		set = append(set, "federated_token_file")
	}
	if cfg.ManagedIdentity != nil {
		set = append(set, "managed_identity")
	}
	return OneCredential(set, []string{"client_secret", "client_certificate", "federated_token_file", "managed_identity"})
}

// OneCredential is the rule of exactly one credential per identity: the
// *ConfigError (field "credential") of set, the names of the credentials
// an identity sets, unless it holds exactly one; choices names every
// credential, for the error of none.
func OneCredential(set, choices []string) error {
	switch len(set) {
	case 1:
		return nil
	case 0:
		return &ConfigError{Field: "credential", Reason: "none is configured; set exactly one of " + listed(choices, "or")}
	case 2:
		return &ConfigError{Field: "credential", Reason: listed(set, "and") + " are both set; configure exactly one credential"}
	default:
		return &ConfigError{Field: "credential", Reason: listed(set, "and") + " are all set; configure exactly one credential"}
	}
}

// listed joins names as "a, b and c" (or "a, b or c").
func listed(names []string, conjunction string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " " + conjunction + " " + names[len(names)-1]
}

// resolveTokenEndpoint returns Config.TokenEndpoint, or the v2.0 token
// endpoint of the tenant under the authority host.
func resolveTokenEndpoint(cfg Config) (string, error) {
	if cfg.TokenEndpoint != "" {
		u, reason := parseEndpointURL(cfg.TokenEndpoint, true)
		if reason != "" {
			return "", &ConfigError{Field: "token_endpoint", Reason: reason}
		}
		return u.String(), nil
	}
	if strings.TrimSpace(cfg.TenantID) == "" {
		return "", &ConfigError{Field: "tenant_id", Reason: "is required unless token_endpoint is set"}
	}
	authority := cfg.AuthorityHost
	if authority == "" {
		authority = DefaultAuthorityHost
	}
	u, reason := parseEndpointURL(authority, true)
	if reason != "" {
		return "", &ConfigError{Field: "authority_host", Reason: reason}
	}
	if u.RawQuery != "" || u.ForceQuery {
		return "", &ConfigError{Field: "authority_host", Reason: "must not have a query"}
	}
	u.Path = strings.TrimRight(u.Path, "/") + "/" + cfg.TenantID + "/oauth2/v2.0/token"
	u.RawPath = ""
	return u.String(), nil
}

// reservedParams are the form fields the client sets itself.
var reservedParams = []string{"grant_type", "client_id", "client_secret", "client_assertion", "client_assertion_type", "scope"}

// checkExtraParams rejects token_request_param names that would override
// the client's own fields or are not sane form field names.
func checkExtraParams(params map[string]string) error {
	for name, value := range params {
		if name == "" || hasControlOrSpace(name) {
			return &ConfigError{Field: "token_request_param", Reason: "names must be non-empty, without spaces or control characters"}
		}
		for _, reserved := range reservedParams {
			if strings.EqualFold(name, reserved) {
				return &ConfigError{Field: "token_request_param", Reason: "cannot set " + reserved + ", which the client sets itself"}
			}
		}
		if strings.ContainsAny(value, "\r\n") {
			return &ConfigError{Field: "token_request_param", Reason: "the value of " + name + " must be a single line"}
		}
	}
	return nil
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

// parseEndpointURL parses an absolute http(s) URL. With httpsOnly, plain
// http is accepted only for loopback hosts. It returns a reason and never
// the raw value: a URL may carry user information.
func parseEndpointURL(raw string, httpsOnly bool) (*url.URL, string) {
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
	if httpsOnly && u.Scheme == "http" && !isLoopbackHost(u.Hostname()) {
		return nil, "must use https (http is allowed only for loopback)"
	}
	return u, ""
}

// isLoopbackHost reports whether host is localhost or a loopback address
// (127.0.0.0/8, ::1): the only hosts a token request may reach over http.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

func hasControlOrSpace(s string) bool {
	for _, r := range s {
		if r <= ' ' || r == 0x7f {
			return true
		}
	}
	return false
}
