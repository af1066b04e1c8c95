// Package entra requests OAuth 2.0 client-credentials access tokens from
// Microsoft Entra ID (or any compatible token endpoint) and turns the
// endpoint's answers into a [Token] or a [RequestError]. An identity
// authenticates with exactly one credential: a client secret, a certificate,
// a federated token file (workload identity) or the host's managed identity.
// [Client.OnBehalfOf] exchanges a signed-in user's token, checked first by
// [ReadUserAssertion], for a token on the user's behalf.
//
// The package knows nothing of Caddy, Redis or caching: a [Client] sends one
// token request per call. Secrets, users' tokens and access tokens never
// appear in the errors it returns, and [Token] redacts its access token
// whenever it is formatted.
package entra

import (
	"cmp"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

// DefaultAuthorityHost is the Entra ID global cloud, the default
// Config.AuthorityHost.
const DefaultAuthorityHost = "https://login.microsoftonline.com"

// DefaultTimeout is the per-request timeout when Config.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// MaxResponseBytes is the largest token response body read (1 MiB).
const MaxResponseBytes = 1 << 20

// SovereignAuthorityHosts are the authority hosts of the Entra ID national
// clouds, by azidentity's names, for Config.AuthorityHost. Each is the host
// MSAL prefers; azcore's cloud.AzureChina names China's alias
// https://login.chinacloudapi.cn, which serves the same tenants.
var SovereignAuthorityHosts = map[string]string{
	"AzurePublic":       "https://login.microsoftonline.com",
	"AzureUSGovernment": "https://login.microsoftonline.us",
	"AzureChina":        "https://login.partner.microsoftonline.cn",
}

// entraHosts are the hosts of Entra ID's token endpoints: every cloud's,
// with their aliases, as MSAL's instance discovery metadata lists them
// (MSAL Go's authority.GetKnownMetadata and TrustedHost). SovereignAuthorityHosts
// are among them.
var entraHosts = []string{
	// global
	"login.microsoftonline.com", "login.windows.net", "login.microsoft.com", "sts.windows.net",
	// US Government
	"login.microsoftonline.us", "login.usgovcloudapi.net", "login-us.microsoftonline.com",
	// China (21Vianet): the host MSAL prefers, and azcore's
	"login.partner.microsoftonline.cn", "login.chinacloudapi.cn",
	// Germany (closed), Bleu, Delos, GovSG
	"login.microsoftonline.de", "login.sovcloud-identity.fr", "login.sovcloud-identity.de", "login.sovcloud-identity.sg",
}

// Config configures one identity (an app registration in one tenant, or a
// managed identity) and how to reach its token endpoint. Exactly one
// credential must be set: ClientSecret, ClientCertificate,
// FederatedTokenFile or ManagedIdentity.
type Config struct {
	// TenantID is the tenant ID or a verified domain name, never common,
	// organizations or consumers (nor may a TokenEndpoint shaped as Entra's
	// name them). Required unless TokenEndpoint or ManagedIdentity is set.
	TenantID string

	// ClientID is the app registration's client ID. Required, except with
	// ManagedIdentity, where it names a user-assigned identity.
	ClientID string

	// ClientSecret is the client secret value (not its ID).
	ClientSecret string

	// ClientAuth is how the credential is presented, one of the ClientAuth
	// constants. Default "": post for a secret, an assertion for a certificate.
	ClientAuth string

	// ClientCertificate authenticates with a certificate registered on the
	// app: every token request carries a freshly signed client assertion.
	ClientCertificate *CertificateCredential

	// FederatedTokenFile is the path of a federated identity provider's
	// token (workload identity), read again for every request.
	FederatedTokenFile string

	// FederatedTokenFileFromEnv says FederatedTokenFile came from
	// AZURE_FEDERATED_TOKEN_FILE (WorkloadIdentityFromEnv sets it): errors
	// then name the variable, not federated_token_file. Default false.
	FederatedTokenFileFromEnv bool

	// ManagedIdentity gets tokens from the host's Azure managed identity
	// endpoint; TenantID, AuthorityHost and TokenEndpoint are then ignored.
	ManagedIdentity *ManagedIdentityCredential

	// ExtraParams are extra form fields of every token request (Caddyfile
	// token_request_param), e.g. "resource". Not with ManagedIdentity.
	// Default none.
	ExtraParams map[string]string

	// ClientCapabilities are declared in every token request's claims, e.g.
	// "cp1" for continuous access evaluation. Not with ManagedIdentity.
	// Default none.
	ClientCapabilities []string

	// AuthorityHost is the authority of {AuthorityHost}/{TenantID}/oauth2/v2.0/token,
	// https (http for loopback hosts). Default DefaultAuthorityHost.
	AuthorityHost string

	// TokenEndpoint is the full URL of the token endpoint, overriding
	// AuthorityHost and TenantID; https only, http for loopback hosts.
	// Default: derived from AuthorityHost and TenantID.
	TokenEndpoint string

	// Timeout bounds each token request, response read included. Default
	// DefaultTimeout; negative values are rejected.
	Timeout time.Duration

	// Logger is told what the client notices outside a token request's
	// answer: a warning when rotated certificate files do not load (once
	// per content), never a secret or key material. Default: none
	// (zap.NewNop).
	Logger *zap.Logger

	// HTTPClient sends the token requests. Default: a process-wide client.
	// Whichever it is, no redirect is followed (a caller's CheckRedirect is
	// replaced), so that no credential is re-posted elsewhere.
	// With mutual TLS, each identity sends through a clone of its
	// *http.Transport; a transport given HTTP/2 by x/net (TLSNextProto set)
	// is cloned to HTTP/1.1, as x/net's connection pool is shared by clones.
	HTTPClient *http.Client
}

// ConfigError names the Config field, by its Caddyfile name, that is missing
// or malformed, and the cause; never the field's value.
type ConfigError struct {
	Field  string // e.g. "client_secret"
	Reason string // e.g. "is required"
}

// Error returns e.g. "entra: client_secret: is required".
func (e *ConfigError) Error() string {
	return "entra: " + e.Field + ": " + e.Reason
}

// NewClient validates cfg, applies defaults and returns a Client. Failures
// are *ConfigError.
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
	cfg.Timeout = cmp.Or(cfg.Timeout, DefaultTimeout)
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	callerClient := cfg.HTTPClient
	if callerClient == nil {
		cfg.HTTPClient = sharedHTTPClient()
	} else {
		own := *callerClient
		own.CheckRedirect = noRedirects
		cfg.HTTPClient = &own
	}

	if cfg.ManagedIdentity != nil {
		mi, err := newManagedIdentity(&cfg)
		if err != nil {
			return nil, err
		}
		cfg.TenantID, cfg.ClientID = "", mi.clientID
		return &Client{cfg: cfg, tokenEndpoint: mi.endpoint, source: mi}, nil
	}

	switch {
	case strings.TrimSpace(cfg.ClientID) == "":
		return nil, &ConfigError{Field: "client_id", Reason: "is required"}
	case hasControlOrSpace(cfg.ClientID):
		return nil, &ConfigError{Field: "client_id", Reason: "must not contain spaces or control characters"}
	case cfg.TenantID != "" && checkTenantID(cfg.TenantID) != "":
		return nil, &ConfigError{Field: "tenant_id", Reason: checkTenantID(cfg.TenantID)}
	case isMultiTenantAlias(cfg.TenantID):
		return nil, &ConfigError{Field: "tenant_id", Reason: "must be the application's own tenant (its ID or a verified domain name), " +
			"not " + listed(multiTenantAliases, "or") + ", which span many tenants: " + oneTenantNeeded}
	}
	endpoint, err := resolveTokenEndpoint(cfg)
	if err != nil {
		return nil, err
	}
	if (cfg.TokenEndpoint == "" || isEntraHost(endpoint)) && !isGUID(cfg.ClientID) {
		// Entra ID echoes an unknown client ID (AADSTS700016): a secret
		// given here by mistake would reach the logs and the answers.
		return nil, &ConfigError{Field: "client_id", Reason: "must be the application (client) ID, a GUID, at Entra ID " +
			"(another OAuth 2.0 server's token_endpoint takes any)"}
	}
	if _, tenant := entraTenantBase(endpoint); cfg.TenantID == "" && isMultiTenantAlias(tenant) {
		return nil, &ConfigError{Field: "token_endpoint", Reason: "must be the token endpoint of the application's own tenant, not of " +
			listed(multiTenantAliases, "or") + ", which span many tenants: " + oneTenantNeeded}
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
		var cred *tlsCredential
		if cred, err = newTLSCredential(*cfg.ClientCertificate, form, callerClient, cfg.Logger); err == nil {
			source, cfg.HTTPClient = cred, cred.client
		}
	case cfg.ClientCertificate != nil:
		source, err = newCertificateCredential(*cfg.ClientCertificate, form, cfg.Logger)
	case cfg.FederatedTokenFile != "":
		if err = checkFederatedTokenFile(cfg); err == nil {
			source = federatedCredential{formCredential: form, path: cfg.FederatedTokenFile, origin: federatedTokenFileOrigin(cfg),
				digest: new(tokenDigestCache)}
		}
	}
	if err != nil {
		return nil, err
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

// oneTenantNeeded says why a multi-tenant authority is refused.
const oneTenantNeeded = "client credentials and on-behalf-of request a token in one tenant"

var credentialNames = []string{"client_secret", "client_certificate", "federated_token_file", "managed_identity"}

func checkOneCredential(cfg Config) error {
	var set []string
	for i, ok := range []bool{cfg.ClientSecret != "", cfg.ClientCertificate != nil,
		cfg.FederatedTokenFile != "", cfg.ManagedIdentity != nil} {
		if ok {
			set = append(set, credentialNames[i])
		}
	}
	return OneCredential(set, credentialNames)
}

// OneCredential is the rule of exactly one credential per identity: the
// *ConfigError of set unless it holds one; choices names them all.
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
	u, reason := parseEndpointURL(cmp.Or(cfg.AuthorityHost, DefaultAuthorityHost), true)
	if reason != "" {
		return "", &ConfigError{Field: "authority_host", Reason: reason}
	}
	if u.RawQuery != "" || u.ForceQuery {
		return "", &ConfigError{Field: "authority_host", Reason: "must not have a query"}
	}
	prefix := strings.TrimRight(u.Path, "/")
	if namesTenant(prefix, cfg.TenantID) {
		// MSAL's authority form: every request would go to
		// .../<tenant>/<tenant>/oauth2/v2.0/token, which Entra answers 404.
		return "", &ConfigError{Field: "authority_host", Reason: "must not name the tenant or the endpoint (the host only, e.g. " +
			DefaultAuthorityHost + "): the tenant goes in tenant_id, a whole endpoint in token_endpoint"}
	}
	u.Path, u.RawPath = prefix+"/"+cfg.TenantID+"/oauth2/v2.0/token", ""
	return u.String(), nil
}

// namesTenant reports whether an authority's path ends with a tenant (the
// tenant ID given, any GUID, common, organizations or consumers) or holds
// a token endpoint's oauth2 segment: a path prefix (a gateway's) is kept.
func namesTenant(path, tenantID string) bool {
	last := path[strings.LastIndexByte(path, '/')+1:]
	if last == "" {
		return false
	}
	return strings.EqualFold(last, strings.TrimSpace(tenantID)) || isGUID(last) || isMultiTenantAlias(last) ||
		slices.Contains(strings.Split(strings.ToLower(path), "/"), "oauth2")
}

// reservedParams are the form fields the client sets itself.
var reservedParams = []string{"grant_type", "client_id", "client_secret", "client_assertion", "client_assertion_type", "scope"}

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

// parseEndpointURL parses an absolute http(s) URL (https only for other
// than loopback with httpsOnly), saying why not, never quoting it.
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
	port, err := strconv.Atoi(cmp.Or(u.Port(), "443")) // no port is a valid one
	switch {
	case u.Opaque != "" || u.Host == "" || u.Hostname() == "":
		return nil, "must have a host"
	case err != nil || port < 1 || port > 65535:
		return nil, "has an invalid port"
	case u.User != nil:
		return nil, "must not contain user information"
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return nil, "must not have a fragment"
	case httpsOnly && u.Scheme == "http" && !isLoopbackHost(u.Hostname()):
		return nil, "must use https (http is allowed only for loopback)"
	}
	return u, ""
}

// isLoopbackHost reports whether host is localhost or a loopback address.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

func hasControlOrSpace(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f })
}
