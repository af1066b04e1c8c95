package caddymodule

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// validateConfig provisions a whole JSON config as a real load does, without
// starting any listener.
func validateConfig(t *testing.T, config string) error {
	t.Helper()
	var cfg caddy.Config
	if err := json.Unmarshal([]byte(config), &cfg); err != nil {
		t.Fatalf("bad test config: %v", err)
	}
	return caddy.Validate(&cfg)
}

// jsonConfig is an http server with one entra_token route and the given
// entra app (empty for none).
func jsonConfig(entraApp, application string) string {
	return jsonConfigWithHandler(entraApp, `"application": "`+application+`"`)
}

// jsonConfigWithHandler is jsonConfig with the handler's fields given raw.
func jsonConfigWithHandler(entraApp, handlerFields string) string {
	apps := `"http": {"servers": {"s": {"listen": [":0"], "routes": [{"handle": [
		{"handler": "entra_token", ` + handlerFields + `},
		{"handler": "static_response", "body": "ok"}]}]}}}`
	if entraApp != "" {
		apps = `"entra": ` + entraApp + `, ` + apps
	}
	return `{"admin": {"disabled": true}, "apps": {` + apps + `}}`
}

func TestConfigRejectedAtLoad(t *testing.T) {
	t.Setenv("ENTRA_UNIT_SECRET", "s3cr3t-from-env")
	t.Setenv("ENTRA_UNIT_EMPTY", "")
	const good = `{"tenant_id": "contoso.onmicrosoft.com", "client_id": "c", "client_secret": "{env.ENTRA_UNIT_SECRET}",
		"applications": {"graph-api": {"scopes": ["https://graph.microsoft.com/.default"]}}}`
	tests := []struct {
		name        string
		entraApp    string
		application string
		wantErr     []string
	}{
		{name: "valid", entraApp: good, application: "graph-api"},
		{name: "unknown application", entraApp: good, application: "billing", wantErr: []string{"MICROSOFT_APPLICATION_NOT_FOUND", `"billing"`, "graph-api"}},
		{name: "no entra app", application: "graph-api", wantErr: []string{"MICROSOFT_PROVIDER_NOT_CONFIGURED"}},
		{name: "no application name", entraApp: good, application: "", wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "entra_token", "application name is required"}},
		{
			name:     "missing tenant",
			entraApp: `{"client_id": "c", "client_secret": "s", "applications": {"a": {"scopes": ["x/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "tenant_id", "is required"},
		},
		{
			name:     "missing client id",
			entraApp: `{"tenant_id": "t", "client_secret": "s", "applications": {"a": {"scopes": ["x/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "client_id"},
		},
		{
			name:     "secret placeholder empty",
			entraApp: `{"tenant_id": "t", "client_id": "c", "client_secret": "{env.ENTRA_UNIT_EMPTY}", "applications": {"a": {"scopes": ["x/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "client_secret", "{env.ENTRA_UNIT_EMPTY} resolved to an empty value"},
		},
		{
			name:     "unknown placeholder",
			entraApp: `{"tenant_id": "t", "client_id": "c", "client_secret": "{http.request.header.X}", "applications": {"a": {"scopes": ["x/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "client_secret", "unknown placeholder"},
		},
		{
			name:     "bad authority host",
			entraApp: `{"tenant_id": "t", "client_id": "c", "client_secret": "s3cr3t-from-env", "authority_host": "login.microsoftonline.com", "applications": {"a": {"scopes": ["x/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "authority_host"},
		},
		{
			name:     "no applications",
			entraApp: `{"tenant_id": "t", "client_id": "c", "client_secret": "s"}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "application"},
		},
		{
			name:     "application without scopes",
			entraApp: `{"tenant_id": "t", "client_id": "c", "client_secret": "s", "applications": {"a": {}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "application a: scope"},
		},
		{
			name:     "scope with a space",
			entraApp: `{"tenant_id": "t", "client_id": "c", "client_secret": "s", "applications": {"a": {"scopes": ["x/.default y/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "invalid scope"},
		},
		{
			name:     "negative refresh window",
			entraApp: `{"tenant_id": "t", "client_id": "c", "client_secret": "s", "refresh_window": -1000000000, "applications": {"a": {"scopes": ["x/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "refresh_window"},
		},
		{
			name:     "bad redis url",
			entraApp: `{"tenant_id": "t", "client_id": "c", "client_secret": "s", "redis": {"url": "http://cache:6379", "insecure_plaintext": true}, "applications": {"a": {"scopes": ["x/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "redis"},
		},
		{
			name:     "redis url password not echoed",
			entraApp: `{"tenant_id": "t", "client_id": "c", "client_secret": "s", "redis": {"url": "redis://:s3cr3t-from-env@cache:notaport", "insecure_plaintext": true}, "applications": {"a": {"scopes": ["x/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "redis"},
		},
		{
			name:     "redis url and addrs",
			entraApp: `{"tenant_id": "t", "client_id": "c", "client_secret": "s", "redis": {"url": "redis://a:6379", "addrs": ["b:6379"], "insecure_plaintext": true}, "applications": {"a": {"scopes": ["x/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "either a URL or addrs"},
		},
		{
			name:     "encryption key not 32 bytes",
			entraApp: `{"tenant_id": "t", "client_id": "c", "client_secret": "s", "redis": {"url": "redis://a:6379", "encryption_keys": ["{env.ENTRA_UNIT_SECRET}"]}, "applications": {"a": {"scopes": ["x/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "encryption_key #1"},
		},
		{
			name:     "redis without encryption_key",
			entraApp: `{"tenant_id": "t", "client_id": "c", "client_secret": "s", "redis": {"url": "redis://a:6379"}, "applications": {"a": {"scopes": ["x/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG: redis encryption_key: is required", "head -c 32 /dev/urandom | base64", "insecure_plaintext"},
		},
		{
			name:     "redis with encryption_key and insecure_plaintext",
			entraApp: `{"tenant_id": "t", "client_id": "c", "client_secret": "s", "redis": {"url": "redis://a:6379", "insecure_plaintext": true, "encryption_keys": ["MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="]}, "applications": {"a": {"scopes": ["x/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG: redis insecure_plaintext", "encryption_key"},
		},
		{
			name:     "redis tls_ca unreadable",
			entraApp: `{"tenant_id": "t", "client_id": "c", "client_secret": "s", "redis": {"url": "rediss://a:6380", "tls_ca": "/nonexistent/ca.pem", "insecure_plaintext": true}, "applications": {"a": {"scopes": ["x/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "redis tls_ca", "reading the CA file"},
		},
		{
			name:     "two credentials",
			entraApp: `{"tenant_id": "t", "client_id": "c", "client_secret": "s3cr3t-from-env", "federated_token_file": "/tmp/token", "applications": {"a": {"scopes": ["x/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "credential", "client_secret, federated_token_file", "exactly one"},
		},
		{
			name:     "application with another client and no credential",
			entraApp: `{"tenant_id": "t", "client_id": "c", "client_secret": "s3cr3t-from-env", "applications": {"a": {"scopes": ["x/.default"], "client_id": "other"}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "application a: credential", "needs its own credential"},
		},
		{
			name:     "application identity alone is enough",
			entraApp: `{"applications": {"a": {"scopes": ["x/.default"], "tenant_id": "t", "client_id": "c", "client_secret": "s"}}}`, application: "a",
		},
		{
			name:     "managed identity needs no tenant",
			entraApp: `{"managed_identity": {}, "applications": {"a": {"scopes": ["https://vault.azure.net/.default"]}}}`, application: "a",
		},
		{
			name:     "plain http authority off loopback",
			entraApp: `{"tenant_id": "t", "client_id": "c", "client_secret": "s", "authority_host": "http://login.example.com", "applications": {"a": {"scopes": ["x/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "authority_host", "https"},
		},
		{
			name:     "reserved token request param",
			entraApp: `{"tenant_id": "t", "client_id": "c", "client_secret": "s", "token_request_params": {"client_secret": "x"}, "applications": {"a": {"scopes": ["x/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "token_request_param"},
		},
		{
			name:     "managed identity with two scopes",
			entraApp: `{"managed_identity": {}, "applications": {"a": {"scopes": ["https://vault.azure.net/.default", "https://storage.azure.com/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "application a: scope", "exactly one resource"},
		},
		{
			name:     "default secret never goes to another host",
			entraApp: `{"tenant_id": "t", "client_id": "c", "client_secret": "s3cr3t-from-env", "applications": {"a": {"scopes": ["x/.default"], "token_endpoint": "https://elsewhere.example/token"}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "application a: credential", "never sent to another client or host"},
		},
		{
			name:     "application tenant under a default token endpoint",
			entraApp: `{"token_endpoint": "https://login.example/t/oauth2/v2.0/token", "client_id": "c", "client_secret": "s", "applications": {"a": {"scopes": ["x/.default"], "tenant_id": "other"}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "application a: tenant_id", "token_endpoint"},
		},
		{
			name:     "refresh window longer than a token",
			entraApp: `{"tenant_id": "t", "client_id": "c", "client_secret": "s", "refresh_window": "2h", "applications": {"a": {"scopes": ["x/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "refresh_window", "at most 30m"},
		},
		{
			name:     "managed identity object id from an empty variable",
			entraApp: `{"managed_identity": {"object_id": "{env.ENTRA_UNIT_EMPTY}"}, "applications": {"a": {"scopes": ["https://vault.azure.net/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "managed_identity object_id", "{env.ENTRA_UNIT_EMPTY}"},
		},
		{
			name:     "managed identity client id from an empty variable",
			entraApp: `{"managed_identity": {"client_id": "{env.ENTRA_UNIT_EMPTY}"}, "applications": {"a": {"scopes": ["https://vault.azure.net/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "managed_identity", "{env.ENTRA_UNIT_EMPTY}"},
		},
		{
			name:     "missing certificate file",
			entraApp: `{"tenant_id": "t", "client_id": "c", "client_certificate": {"certificate": "/nonexistent/cert.pem"}, "applications": {"a": {"scopes": ["x/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "client_certificate"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := validateConfig(t, jsonConfig(tc.entraApp, tc.application))
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatalf("valid config rejected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("config accepted, want an error")
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
			if strings.Contains(err.Error(), "s3cr3t-from-env") {
				t.Error("the error holds a secret")
			}
		})
	}
}

func TestPurgeOnStatusMustBeAnErrorStatus(t *testing.T) {
	const app = `{"tenant_id": "t", "client_id": "c", "client_secret": "s", "applications": {"a": {"scopes": ["x/.default"]}}}`
	err := validateConfig(t, jsonConfigWithHandler(app, `"application": "a", "purge_on_status": [401, 200]`))
	if err == nil || !strings.Contains(err.Error(), "MICROSOFT_PROVIDER_INVALID_CONFIG: entra_token purge_on_status: 200") {
		t.Fatalf("error = %v, want purge_on_status 200 rejected", err)
	}
	if err := validateConfig(t, jsonConfigWithHandler(app, `"application": "a", "purge_on_status": []`)); err != nil {
		t.Fatalf("an empty purge_on_status (purging disabled) was rejected: %v", err)
	}
}

// TestValidateChecksEverySettingBeforeRegistering: Provision only loads;
// Validate resolves and checks every setting and registers nothing when one
// is wrong.
func TestValidateChecksEverySettingBeforeRegistering(t *testing.T) {
	app := &App{
		IdentityConfig: IdentityConfig{TenantID: "t", ClientID: "c", ClientSecret: "s"},
		RefreshWindow:  caddy.Duration(-1),
		Applications:   map[string]*Application{"a": {Scopes: []string{"x/.default"}}},
		logger:         zap.NewNop(),
	}
	err := app.Validate()
	if err == nil || !strings.Contains(err.Error(), "MICROSOFT_PROVIDER_INVALID_CONFIG: refresh_window") {
		t.Fatalf("Validate() = %v, want refresh_window rejected", err)
	}
	if app.cache != nil || app.handles != nil {
		t.Error("an invalid config registered applications")
	}
	app.RefreshWindow = 0
	if err := app.Validate(); err != nil {
		t.Fatalf("a valid config: %v", err)
	}
	t.Cleanup(func() { _ = app.Cleanup() })
	if app.handles["a"] == nil {
		t.Error("a valid config registered no handle")
	}
}

func TestInsecurePlaintextWarnsAtLoad(t *testing.T) {
	for _, tc := range []struct {
		name     string
		redis    *RedisConfig
		wantWarn bool
	}{
		{name: "insecure_plaintext", redis: &RedisConfig{URL: "redis://a:6379", InsecurePlaintext: true}, wantWarn: true},
		{name: "encryption_key", redis: &RedisConfig{URL: "redis://a:6379", EncryptionKeys: []string{"k"}}},
		{name: "no redis"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.WarnLevel)
			a := &App{Redis: tc.redis, logger: zap.New(core)}
			a.warnInsecurePlaintext()
			warned := logs.FilterMessageSnippet("any Redis writer can replace or withhold").Len() == 1
			if warned != tc.wantWarn {
				t.Fatalf("warned %v, want %v; logs: %v", warned, tc.wantWarn, logs.All())
			}
		})
	}
}
