package entraapp

import (
	"cmp"
	"errors"
	"os"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-entra/caddy-entra/entra"
)

// IdentityConfig is who asks Entra ID for tokens: the tenant, the client
// and exactly one credential. Every string may be an {env.*} or {file.*}
// placeholder, resolved at load.
type IdentityConfig struct {
	// TenantID is the tenant's ID or verified domain. Required, unless
	// token_endpoint is set or the credential is a managed identity.
	TenantID string `json:"tenant_id,omitempty"`

	// ClientID is the app registration's client ID. Required, except for a
	// managed identity.
	ClientID string `json:"client_id,omitempty"`

	// ClientSecret is a client secret. One of the credentials.
	ClientSecret string `json:"client_secret,omitempty"`

	// ClientAuth is how the credential is presented: "post" or "basic"
	// (client_secret_post or _basic, RFC 6749 2.3.1) with client_secret;
	// "tls_client_auth" or "self_signed_tls_client_auth" (RFC 8705) with
	// client_certificate, at a non-Entra https token_endpoint. Default
	// "post" for a secret, a signed assertion for a certificate.
	ClientAuth string `json:"client_auth,omitempty"`

	// ClientCertificate signs a fresh client assertion for every request.
	// One of the credentials.
	ClientCertificate *ClientCertificateConfig `json:"client_certificate,omitempty"`

	// FederatedTokenFile is sent as the client assertion, read again for
	// every request (the kubelet rotates it). One of the credentials.
	FederatedTokenFile string `json:"federated_token_file,omitempty"`

	// WorkloadIdentity takes the token file, client, tenant and authority
	// from the AZURE_* variables, as azidentity does; fields set here win.
	// One of the credentials.
	WorkloadIdentity bool `json:"workload_identity,omitempty"`

	// ManagedIdentity gets tokens from IMDS, or from the App Service
	// endpoint when IDENTITY_ENDPOINT and IDENTITY_HEADER are set. One of
	// the credentials.
	ManagedIdentity *ManagedIdentityConfig `json:"managed_identity,omitempty"`

	// AuthorityHost is the Entra ID authority (a sovereign cloud's, e.g.
	// https://login.microsoftonline.us); https, or http on loopback only.
	// Default https://login.microsoftonline.com.
	AuthorityHost string `json:"authority_host,omitempty"`

	// TokenEndpoint is the token endpoint's URL; it overrides
	// authority_host and tenant_id. Optional.
	TokenEndpoint string `json:"token_endpoint,omitempty"`

	// TokenRequestParams are extra form fields of every token request
	// (e.g. "resource"); they may not replace the protocol's.
	TokenRequestParams map[string]string `json:"token_request_params,omitempty"`
}

// ClientCertificateConfig is a certificate credential.
type ClientCertificateConfig struct {
	// Certificate is a PEM file of the certificate chain, leaf first, and
	// maybe the key; re-read when it changes. Required.
	Certificate string `json:"certificate,omitempty"`

	// Key is a PEM file of the RSA key. Default: the certificate file's.
	Key string `json:"key,omitempty"`

	// KeyPassword decrypts an encrypted key. Optional.
	KeyPassword string `json:"key_password,omitempty"`

	// SendX5C adds the chain to each assertion (x5c), for subject name and
	// issuer authentication. Default false.
	SendX5C bool `json:"send_x5c,omitempty"`
}

// ManagedIdentityConfig is a managed identity credential. At most one of
// ClientID, ObjectID and ResourceID selects a user-assigned identity;
// default: the system-assigned one.
type ManagedIdentityConfig struct {
	// ClientID selects a user-assigned identity by its client ID. Default
	// none.
	ClientID string `json:"client_id,omitempty"`

	// ObjectID selects a user-assigned identity by its object (principal)
	// ID. Default none.
	ObjectID string `json:"object_id,omitempty"`

	// ResourceID selects a user-assigned identity by its Azure resource ID
	// (/subscriptions/.../userAssignedIdentities/<name>). Default none.
	ResourceID string `json:"resource_id,omitempty"`

	// Endpoint is the IMDS token endpoint, for tests. Default
	// http://169.254.169.254/metadata/identity/oauth2/token.
	Endpoint string `json:"endpoint,omitempty"`
}

// credentialNames are the credentials' Caddyfile names.
var credentialNames = []string{"client_secret", "client_certificate", "federated_token_file", "workload_identity", "managed_identity"}

// credentials lists the credentials set, by their Caddyfile names.
func (id *IdentityConfig) credentials() []string {
	isSet := []bool{id.ClientSecret != "", id.ClientCertificate != nil, id.FederatedTokenFile != "", id.WorkloadIdentity, id.ManagedIdentity != nil}
	var set []string
	for i, name := range credentialNames {
		if isSet[i] {
			set = append(set, name)
		}
	}
	return set
}

// inherit fills what an application leaves unset from the default
// identity. The default credential goes only to the default client at the
// default endpoint: a secret is never sent to another client or host.
func (id IdentityConfig) inherit(parent IdentityConfig, field string) (IdentityConfig, error) {
	ownCredential := len(id.credentials()) > 0
	ownClient := id.ClientID != ""
	ownEndpoint := id.AuthorityHost != "" || id.TokenEndpoint != ""
	if id.TenantID != "" && !ownEndpoint && parent.TokenEndpoint != "" {
		return id, ConfigError(field+"tenant_id", "is set, but the default identity uses token_endpoint, which "+
			"ignores the tenant; set authority_host or token_endpoint in this application too")
	}
	if !ownCredential && (ownClient || ownEndpoint) && len(parent.credentials()) > 0 {
		return id, ConfigError(field+"credential", "this application sets its own client_id, authority_host or "+
			"token_endpoint, so it needs its own credential (the default one is never sent to another client or host)")
	}
	id.TenantID = cmp.Or(id.TenantID, parent.TenantID)
	if !ownEndpoint {
		id.AuthorityHost, id.TokenEndpoint = parent.AuthorityHost, parent.TokenEndpoint
	}
	if id.TokenRequestParams == nil && !ownClient && !ownEndpoint {
		id.TokenRequestParams = parent.TokenRequestParams // they go where the default goes only
	}
	if !ownCredential && !ownClient {
		id.ClientID, id.ClientSecret = parent.ClientID, parent.ClientSecret
		id.ClientCertificate, id.FederatedTokenFile = parent.ClientCertificate, parent.FederatedTokenFile
		id.WorkloadIdentity, id.ManagedIdentity = parent.WorkloadIdentity, parent.ManagedIdentity
	}
	if ownCredential && !ownClient && parent.ClientID != "" && id.ManagedIdentity == nil && !id.WorkloadIdentity {
		id.ClientID = parent.ClientID // another credential of the same client
	}
	if id.ClientAuth == "" && !ownEndpoint && slices.Equal(id.credentials(), parent.credentials()) {
		id.ClientAuth = parent.ClientAuth // the same server, the same kind of credential: its way of taking it
	}
	return id, nil
}

// isZero reports whether an application sets no identity field.
func (id *IdentityConfig) isZero() bool {
	return id.TenantID == "" && id.ClientID == "" && len(id.credentials()) == 0 && id.ClientAuth == "" &&
		id.AuthorityHost == "" && id.TokenEndpoint == "" && len(id.TokenRequestParams) == 0
}

// clientConfig resolves the identity into the token client's configuration;
// field prefixes errors' field names (e.g. "application orders-api: ").
func (id *IdentityConfig) clientConfig(repl *caddy.Replacer, field string) (entra.Config, error) {
	r := resolver{repl: repl, prefix: field}
	cfg := entra.Config{
		TenantID:      r.value("tenant_id", id.TenantID),
		ClientID:      r.value("client_id", id.ClientID),
		ClientSecret:  r.required("client_secret", id.ClientSecret),
		ClientAuth:    id.ClientAuth,
		AuthorityHost: r.value("authority_host", id.AuthorityHost),
		TokenEndpoint: r.value("token_endpoint", id.TokenEndpoint),
	}
	if len(id.TokenRequestParams) > 0 {
		cfg.ExtraParams = make(map[string]string, len(id.TokenRequestParams))
		for name, value := range id.TokenRequestParams {
			cfg.ExtraParams[name] = r.value("token_request_param "+name, value)
		}
	}
	if cc := id.ClientCertificate; cc != nil {
		cfg.ClientCertificate = &entra.CertificateCredential{
			CertFile: r.required("client_certificate", cc.Certificate),
			// Set but empty would read the key from the certificate file, or
			// not decrypt it, and the error would not name the placeholder.
			KeyFile:     r.required("client_certificate key", cc.Key),
			KeyPassword: r.required("client_certificate key_password", cc.KeyPassword),
			SendX5C:     cc.SendX5C,
		}
	}
	cfg.FederatedTokenFile = r.required("federated_token_file", id.FederatedTokenFile)
	if mi := id.ManagedIdentity; mi != nil {
		cfg.ManagedIdentity = &entra.ManagedIdentityCredential{
			// Set but empty would silently select another identity.
			ClientID:     r.required("managed_identity", mi.ClientID),
			ObjectID:     r.required("managed_identity object_id", mi.ObjectID),
			ResourceID:   r.required("managed_identity resource_id", mi.ResourceID),
			IMDSEndpoint: r.required("managed_identity endpoint", mi.Endpoint),
		}
	}
	if r.err != nil { // with the identifiers missing too: every fix in one run
		if id.ManagedIdentity == nil && !id.WorkloadIdentity {
			r.err = errors.Join(r.err, missingIdentifier(cfg, id, field, r.failed))
		}
		return entra.Config{}, r.err
	}
	if id.WorkloadIdentity {
		fromEnv, err := entra.WorkloadIdentityFromEnv(os.Getenv)
		if err != nil {
			return entra.Config{}, prefixConfigError(field, err)
		}
		cfg.FederatedTokenFile, cfg.FederatedTokenFileFromEnv = fromEnv.FederatedTokenFile, fromEnv.FederatedTokenFileFromEnv
		cfg.ClientID, cfg.TenantID = cmp.Or(cfg.ClientID, fromEnv.ClientID), cmp.Or(cfg.TenantID, fromEnv.TenantID)
		if cfg.AuthorityHost == "" && cfg.TokenEndpoint == "" {
			cfg.AuthorityHost = fromEnv.AuthorityHost
		}
	}
	if err := entra.OneCredential(id.credentials(), credentialNames); err != nil {
		return entra.Config{}, prefixConfigError(field, err)
	}
	if cfg.ManagedIdentity == nil { // what every credential but a managed identity needs
		if err := missingIdentifier(cfg, id, field, nil); err != nil {
			return entra.Config{}, err
		}
	}
	return cfg, nil
}

// missingIdentifier refuses a client ID or a tenant (or token endpoint)
// that cfg lacks, both when both are missing, but not a field in said
// (already refused).
func missingIdentifier(cfg entra.Config, id *IdentityConfig, field string, said map[string]bool) error {
	var errs []error
	if cfg.ClientID == "" && !said["client_id"] {
		errs = append(errs, ConfigError(field+"client_id", "is required"+placeholderHint(id.ClientID)))
	}
	if cfg.TenantID == "" && cfg.TokenEndpoint == "" && !said["tenant_id"] && !said["token_endpoint"] {
		errs = append(errs, ConfigError(field+"tenant_id", "is required (or set token_endpoint)"+placeholderHint(id.TenantID)))
	}
	return errors.Join(errs...)
}

// resolver replaces placeholders, remembering every failure.
type resolver struct {
	repl   *caddy.Replacer
	prefix string
	err    error
	failed map[string]bool // the fields err names
}

// fail adds field's failure to r.err.
func (r *resolver) fail(field, reason string) {
	r.err = errors.Join(r.err, ConfigError(r.prefix+field, reason))
	if r.failed == nil {
		r.failed = make(map[string]bool)
	}
	r.failed[field] = true
}

// value resolves raw; an unknown placeholder is an error naming the field.
func (r *resolver) value(field, raw string) string {
	if raw == "" {
		return ""
	}
	value, err := r.repl.ReplaceOrErr(raw, false, true)
	if err != nil {
		r.fail(field, "unknown placeholder (only {env.*}, {file.*} and global placeholders are resolved)")
	}
	return strings.TrimSpace(value)
}

// required is value for a field that, when set, must not resolve to
// nothing; the error names the placeholder, never a value.
func (r *resolver) required(field, raw string) string {
	value := r.value(field, raw)
	if raw != "" && value == "" && !r.failed[field] { // not an unknown placeholder, said already
		r.fail(field, "is required"+placeholderHint(raw))
	}
	return value
}
