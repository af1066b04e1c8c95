package entra

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

const configSecret = "Zx8Q~secret-value-never-in-messages"

func validConfig() Config {
	return Config{
		TenantID:     "72f988bf-86f1-41af-91ab-2d7cd011db47",
		ClientID:     "11111111-2222-4333-8444-555555555555",
		ClientSecret: configSecret,
	}
}

func TestNewClientValidation(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Config)
		field  string
	}{
		{"missing client_id", func(c *Config) { c.ClientID = "" }, "client_id"},
		{"blank client_id", func(c *Config) { c.ClientID = "  " }, "client_id"},
		{"client_id with space", func(c *Config) { c.ClientID = "a b" }, "client_id"},
		{"missing client_secret", func(c *Config) { c.ClientSecret = "" }, "credential"},
		{"missing tenant_id", func(c *Config) { c.TenantID = "" }, "tenant_id"},
		{"tenant_id with slash", func(c *Config) { c.TenantID = "a/b" }, "tenant_id"},
		{"tenant_id with query", func(c *Config) { c.TenantID = "a?x=" + configSecret }, "tenant_id"},
		{"tenant_id with fragment", func(c *Config) { c.TenantID = "a#b" }, "tenant_id"},
		{"tenant_id with space", func(c *Config) { c.TenantID = "a b" }, "tenant_id"},
		{"tenant_id dot-dot", func(c *Config) { c.TenantID = ".." }, "tenant_id"},
		{"tenant_id percent", func(c *Config) { c.TenantID = "%2e%2e" }, "tenant_id"},
		{"authority_host relative", func(c *Config) { c.AuthorityHost = "login.microsoftonline.com" }, "authority_host"},
		{"authority_host ftp", func(c *Config) { c.AuthorityHost = "ftp://login.microsoftonline.com" }, "authority_host"},
		{"authority_host no host", func(c *Config) { c.AuthorityHost = "https://" }, "authority_host"},
		{"authority_host port only", func(c *Config) { c.AuthorityHost = "https://:443" }, "authority_host"},
		{"authority_host bad port", func(c *Config) { c.AuthorityHost = "https://h:99999" }, "authority_host"},
		{"authority_host userinfo", func(c *Config) { c.AuthorityHost = "https://user:" + configSecret + "@login.example" }, "authority_host"},
		{"authority_host query", func(c *Config) { c.AuthorityHost = "https://login.example/?x=1" }, "authority_host"},
		{"authority_host fragment", func(c *Config) { c.AuthorityHost = "https://login.example/#x" }, "authority_host"},
		{"authority_host unparsable", func(c *Config) { c.AuthorityHost = "https://[::1" }, "authority_host"},
		{"authority_host with space", func(c *Config) { c.AuthorityHost = "https://login example" }, "authority_host"},
		{"authority_host with the tenant (MSAL's authority)", func(c *Config) { c.AuthorityHost = "https://login.microsoftonline.com/" + c.TenantID }, "authority_host"},
		{"authority_host with a GUID", func(c *Config) {
			c.AuthorityHost = "https://login.microsoftonline.com/00000000-0000-4000-8000-000000000009/"
		}, "authority_host"},
		{"authority_host with organizations", func(c *Config) { c.AuthorityHost = "https://login.microsoftonline.com/Organizations" }, "authority_host"},
		{"authority_host with the endpoint", func(c *Config) {
			c.AuthorityHost = "https://login.microsoftonline.com/" + configSecret + "/oauth2/v2.0/token"
		}, "authority_host"},
		{"token_endpoint relative", func(c *Config) { c.TokenEndpoint = "/oauth2/token" }, "token_endpoint"},
		{"token_endpoint mailto", func(c *Config) { c.TokenEndpoint = "mailto:a@b" }, "token_endpoint"},
		{"token_endpoint userinfo", func(c *Config) { c.TokenEndpoint = "https://" + configSecret + "@idp.example/token" }, "token_endpoint"},
		{"token_endpoint without tenant still checks tenant", func(c *Config) { c.TokenEndpoint = "https://idp.example/token"; c.TenantID = "a/b" }, "tenant_id"},
		{"negative timeout", func(c *Config) { c.Timeout = -time.Second }, "timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := validConfig()
			tt.modify(&cfg)
			client, err := NewClient(cfg)
			if err == nil {
				t.Fatalf("NewClient() = %v, want an error for %s", client.TokenEndpoint(), tt.field)
			}
			var cfgErr *ConfigError
			if !errors.As(err, &cfgErr) {
				t.Fatalf("error %T (%v) is not a *ConfigError", err, err)
			}
			if cfgErr.Field != tt.field {
				t.Errorf("Field = %q, want %q (%v)", cfgErr.Field, tt.field, err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "entra: "+tt.field+": ") {
				t.Errorf("message %q does not start with %q", msg, "entra: "+tt.field+": ")
			}
			if strings.Contains(msg, configSecret) {
				t.Errorf("message %q contains the secret", msg)
			}
		})
	}
}

func TestNewClientEndpoints(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Config)
		want   string
	}{
		{"default authority", func(*Config) {}, "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token"},
		{"sovereign cloud, trailing slash", func(c *Config) { c.AuthorityHost = "https://login.microsoftonline.us/" }, "https://login.microsoftonline.us/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token"},
		{"authority with path and port", func(c *Config) {
			c.AuthorityHost = "HTTP://127.0.0.1:9400/prefix//"
			c.TenantID = "contoso.onmicrosoft.com"
		}, "http://127.0.0.1:9400/prefix/contoso.onmicrosoft.com/oauth2/v2.0/token"},
		{"token_endpoint overrides", func(c *Config) {
			c.TokenEndpoint = "https://idp.example/oauth2/token?api-version=2"
			c.AuthorityHost = "https://ignored.example"
		}, "https://idp.example/oauth2/token?api-version=2"},
		{"token_endpoint without tenant", func(c *Config) { c.TokenEndpoint = "https://idp.example/token"; c.TenantID = "" }, "https://idp.example/token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := validConfig()
			tt.modify(&cfg)
			client, err := NewClient(cfg)
			if err != nil {
				t.Fatalf("NewClient() error: %v", err)
			}
			if got := client.TokenEndpoint(); got != tt.want {
				t.Errorf("TokenEndpoint() = %q, want %q", got, tt.want)
			}
			if client.ClientID() != cfg.ClientID || client.TenantID() != cfg.TenantID {
				t.Errorf("ClientID, TenantID = %q, %q", client.ClientID(), client.TenantID())
			}
		})
	}
}

func TestNewClientDefaults(t *testing.T) {
	client, err := NewClient(validConfig())
	if err != nil {
		t.Fatal(err)
	}
	if client.cfg.Timeout != DefaultTimeout {
		t.Errorf("Timeout = %s, want %s", client.cfg.Timeout, DefaultTimeout)
	}
	if client.cfg.HTTPClient == nil || client.cfg.HTTPClient == http.DefaultClient {
		t.Errorf("HTTPClient = %v, want a dedicated client", client.cfg.HTTPClient)
	}

	custom := &http.Client{Transport: &http.Transport{}}
	cfg := validConfig()
	cfg.HTTPClient, cfg.Timeout = custom, time.Second
	client, err = NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The caller's client is used through a copy that follows no redirect.
	if client.cfg.HTTPClient.Transport != custom.Transport || client.cfg.HTTPClient.CheckRedirect == nil ||
		custom.CheckRedirect != nil || client.cfg.Timeout != time.Second {
		t.Error("explicit HTTPClient's transport or Timeout not kept, or the caller's client changed")
	}
}

func TestExactlyOneCredential(t *testing.T) {
	cert := &CertificateCredential{CertFile: "/nonexistent/cert.pem"}
	mi := &ManagedIdentityCredential{IMDSEndpoint: "http://127.0.0.1:1/"}
	tests := []struct {
		name string
		cfg  Config
		want string // the ConfigError reason; "" for a valid config
	}{
		{"none", Config{}, "none is configured; set exactly one of client_secret, client_certificate, federated_token_file or managed_identity"},
		{"secret and certificate", Config{ClientSecret: configSecret, ClientCertificate: cert}, "client_secret and client_certificate are both set; configure exactly one credential"},
		{"secret and federated", Config{ClientSecret: configSecret, FederatedTokenFile: "/token"}, "client_secret and federated_token_file are both set; configure exactly one credential"},
		{"certificate and managed identity", Config{ClientCertificate: cert, ManagedIdentity: mi}, "client_certificate and managed_identity are both set; configure exactly one credential"},
		{"federated and managed identity", Config{FederatedTokenFile: "/token", ManagedIdentity: mi}, "federated_token_file and managed_identity are both set; configure exactly one credential"},
		{"three", Config{ClientSecret: configSecret, FederatedTokenFile: "/token", ManagedIdentity: mi}, "client_secret, federated_token_file and managed_identity are all set; configure exactly one credential"},
		{"secret", Config{ClientSecret: configSecret}, ""},
		{"federated", Config{FederatedTokenFile: "/token"}, ""},
		{"managed identity", Config{ManagedIdentity: mi}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.TenantID, cfg.ClientID = "t", "00000000-0000-4000-8000-0000000000c1"
			client, err := NewClient(cfg)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("NewClient: %v", err)
				}
				return
			}
			var cfgErr *ConfigError
			if !errors.As(err, &cfgErr) || cfgErr.Field != "credential" || cfgErr.Reason != tt.want {
				t.Fatalf("NewClient() = %v, %v; want credential: %s", client, err, tt.want)
			}
			if strings.Contains(err.Error(), configSecret) {
				t.Errorf("message %q contains the secret", err)
			}
		})
	}
}

func TestManagedIdentityNeedsNoTenantOrClient(t *testing.T) {
	client, err := NewClient(Config{ManagedIdentity: &ManagedIdentityCredential{IMDSEndpoint: "http://127.0.0.1:1/token"}})
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	if client.ClientID() != "" || client.TenantID() != "" {
		t.Errorf("ClientID, TenantID = %q, %q", client.ClientID(), client.TenantID())
	}
}

func TestHTTPOnlyForLoopback(t *testing.T) {
	tests := []struct {
		authority string
		ok        bool
	}{
		{"http://login.microsoftonline.com", false},
		{"http://10.0.0.5:8080", false},
		{"http://localhost.example.com", false},
		{"http://127.0.0.1:9400", true},
		{"http://127.8.9.10", true},
		{"http://[::1]:9400", true},
		{"http://LocalHost:9400", true},
		{"https://login.microsoftonline.com", true},
	}
	for _, tt := range tests {
		for _, field := range []string{"authority_host", "token_endpoint"} {
			cfg := validConfig()
			if field == "authority_host" {
				cfg.AuthorityHost = tt.authority
			} else {
				cfg.TokenEndpoint = tt.authority + "/oauth2/token"
			}
			_, err := NewClient(cfg)
			if tt.ok {
				if err != nil {
					t.Errorf("%s %s: %v", field, tt.authority, err)
				}
				continue
			}
			var cfgErr *ConfigError
			if !errors.As(err, &cfgErr) || cfgErr.Field != field || cfgErr.Reason != "must use https (http is allowed only for loopback)" {
				t.Errorf("%s %s: error = %v", field, tt.authority, err)
			}
		}
	}
}

func TestSovereignAuthorityHosts(t *testing.T) {
	for name, host := range SovereignAuthorityHosts {
		cfg := validConfig()
		cfg.AuthorityHost = host
		client, err := NewClient(cfg)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if want := host + "/" + cfg.TenantID + "/oauth2/v2.0/token"; client.TokenEndpoint() != want {
			t.Errorf("%s: TokenEndpoint() = %q, want %q", name, client.TokenEndpoint(), want)
		}
	}
}

// Every cloud's preferred host is among the Entra hosts that mutual TLS
// is refused for (isEntraEndpoint).
func TestSovereignAuthorityHostsAreEntraHosts(t *testing.T) {
	for name, authority := range SovereignAuthorityHosts {
		if !isEntraEndpoint(authority + "/token") {
			t.Errorf("%s (%s) is not taken for an Entra host", name, authority)
		}
	}
}

func TestExtraParamsValidation(t *testing.T) {
	for _, name := range []string{"grant_type", "client_id", "client_secret", "client_assertion", "client_assertion_type", "scope", "Scope", "", "a b"} {
		cfg := validConfig()
		cfg.ExtraParams = map[string]string{name: "x"}
		_, err := NewClient(cfg)
		var cfgErr *ConfigError
		if !errors.As(err, &cfgErr) || cfgErr.Field != "token_request_param" {
			t.Errorf("token_request_param %q: error = %v", name, err)
		}
	}
	cfg := validConfig()
	cfg.ExtraParams = map[string]string{"resource": "a\nb"}
	if _, err := NewClient(cfg); err == nil {
		t.Error("a multi-line value was accepted")
	}
}

func TestCacheKey(t *testing.T) {
	base, err := NewClient(validConfig())
	if err != nil {
		t.Fatal(err)
	}
	rotated := validConfig()
	rotated.ClientSecret = "another-secret"
	same, _ := NewClient(rotated)
	if base.CacheKey() != same.CacheKey() {
		t.Error("the cache key depends on the secret")
	}
	if strings.Contains(base.CacheKey(), configSecret) {
		t.Error("the cache key contains the secret")
	}
	withParam := validConfig()
	withParam.ExtraParams = map[string]string{"resource": "https://graph.microsoft.com"}
	other, _ := NewClient(withParam)
	otherClient := validConfig()
	otherClient.ClientID = "99999999-2222-4333-8444-555555555555"
	third, _ := NewClient(otherClient)
	if base.CacheKey() == other.CacheKey() || base.CacheKey() == third.CacheKey() {
		t.Error("distinct identities share a CacheKey()")
	}
	// A token declaring client capabilities (xms_cc) is another token.
	withCapabilities := validConfig()
	withCapabilities.ClientCapabilities = []string{"cp1"}
	capable, err := NewClient(withCapabilities)
	if err != nil {
		t.Fatal(err)
	}
	if capable.CacheKey() == base.CacheKey() {
		t.Error("a client declaring cp1 shares the CacheKey() of one declaring none")
	}
	if !strings.HasPrefix(base.CacheKey(), base.TokenEndpoint()+"\n"+base.TenantID()+"\n"+base.ClientID()) {
		t.Errorf("CacheKey() = %q", base.CacheKey())
	}
}

// The authority MSAL takes (https://login.microsoftonline.com/<tenant>) is
// refused as authority_host, saying what goes where: the token requests
// would go to .../<tenant>/<tenant>/oauth2/v2.0/token. A gateway's path
// prefix is kept.
func TestAuthorityHostNamesNoTenant(t *testing.T) {
	cfg := validConfig()
	cfg.AuthorityHost = "https://login.microsoftonline.com/" + strings.ToUpper(cfg.TenantID)
	_, err := NewClient(cfg)
	want := "entra: authority_host: must not name the tenant or the endpoint (the host only, e.g. https://login.microsoftonline.com): " +
		"the tenant goes in tenant_id, a whole endpoint in token_endpoint"
	if err == nil || err.Error() != want {
		t.Errorf("NewClient() error = %v, want %q", err, want)
	}
	cfg.AuthorityHost = "https://gateway.example/entra/"
	if c, err := NewClient(cfg); err != nil || c.TokenEndpoint() != "https://gateway.example/entra/"+cfg.TenantID+"/oauth2/v2.0/token" {
		t.Errorf("a path prefix: %v", err)
	}
	// A managed identity ignores authority_host, as before.
	if _, err := NewClient(Config{AuthorityHost: "https://login.microsoftonline.com/common",
		ManagedIdentity: &ManagedIdentityCredential{IMDSEndpoint: "http://127.0.0.1:1/token"}}); err != nil {
		t.Errorf("managed identity beside an authority naming a tenant: %v", err)
	}
}

// A client ID at Entra ID's token endpoint is a GUID: Entra echoes an
// unknown one (AADSTS700016) into errors, logs and answers, so a secret
// given as client_id (the two swapped) is refused at load, unquoted.
// Another OAuth 2.0 server's (token_endpoint) may be anything.
func TestClientIDIsAGUIDAtEntraID(t *testing.T) {
	const secret = "Abc8Q~swapped.secret_9d8c7b6a5-AbCdEfGh"
	_, err := NewClient(Config{TenantID: "contoso.onmicrosoft.com", ClientID: secret, ClientSecret: "00000000-0000-4000-8000-0000000000c1"})
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Field != "client_id" || strings.Contains(err.Error(), "Abc8Q") {
		t.Errorf("a secret as client_id: %v; want a client_id ConfigError that does not quote it", err)
	}
	_, err = NewClient(Config{TokenEndpoint: "https://login.microsoftonline.us/contoso.onmicrosoft.com/oauth2/v2.0/token",
		ClientID: secret, ClientSecret: "00000000-0000-4000-8000-0000000000c1"})
	if !errors.As(err, &ce) || ce.Field != "client_id" {
		t.Errorf("a secret as client_id at an Entra token_endpoint: %v; want a client_id ConfigError", err)
	}
	if _, err := NewClient(Config{TokenEndpoint: "https://idp.example/oauth2/token", ClientID: "orders-sidecar", ClientSecret: "s"}); err != nil {
		t.Errorf("another server's client ID: %v", err)
	}
}
