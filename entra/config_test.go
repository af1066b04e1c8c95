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
		{"missing client_secret", func(c *Config) { c.ClientSecret = "" }, "client_secret"},
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

	custom := &http.Client{}
	cfg := validConfig()
	cfg.HTTPClient, cfg.Timeout = custom, time.Second
	client, err = NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if client.cfg.HTTPClient != custom || client.cfg.Timeout != time.Second {
		t.Error("explicit HTTPClient or Timeout not kept")
	}
}
