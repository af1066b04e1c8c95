package entratoken

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/caddyserver/caddy/v2/modules/logging"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/caddy-entra/caddy-entra/internal/apptest"
)

func TestConfigRejectedAtLoad(t *testing.T) {
	t.Setenv("ENTRA_UNIT_SECRET", "s3cr3t-from-env")
	t.Setenv("ENTRA_UNIT_EMPTY", "")
	const good = `{"tenant_id": "contoso.onmicrosoft.com", "client_id": "00000000-0000-4000-8000-0000000000c1", "client_secret": "{env.ENTRA_UNIT_SECRET}",
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
			entraApp: `{"client_id": "00000000-0000-4000-8000-0000000000c1", "client_secret": "s", "applications": {"a": {"scopes": ["x/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "tenant_id", "is required"},
		},
		{
			name:     "missing client id",
			entraApp: `{"tenant_id": "t", "client_secret": "s", "applications": {"a": {"scopes": ["x/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "client_id"},
		},
		{
			name:     "secret placeholder empty",
			entraApp: `{"tenant_id": "t", "client_id": "00000000-0000-4000-8000-0000000000c1", "client_secret": "{env.ENTRA_UNIT_EMPTY}", "applications": {"a": {"scopes": ["x/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "client_secret", "{env.ENTRA_UNIT_EMPTY} resolved to an empty value"},
		},
		{
			name:     "unknown placeholder",
			entraApp: `{"tenant_id": "t", "client_id": "00000000-0000-4000-8000-0000000000c1", "client_secret": "{http.request.header.X}", "applications": {"a": {"scopes": ["x/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "client_secret", "unknown placeholder"},
		},
		{
			name:     "bad authority host",
			entraApp: `{"tenant_id": "t", "client_id": "00000000-0000-4000-8000-0000000000c1", "client_secret": "s3cr3t-from-env", "authority_host": "login.microsoftonline.com", "applications": {"a": {"scopes": ["x/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "authority_host"},
		},
		{
			name:     "no applications",
			entraApp: `{"tenant_id": "t", "client_id": "00000000-0000-4000-8000-0000000000c1", "client_secret": "s"}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "application"},
		},
		{
			name:     "application without scopes",
			entraApp: `{"tenant_id": "t", "client_id": "00000000-0000-4000-8000-0000000000c1", "client_secret": "s", "applications": {"a": {}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "application a: scope"},
		},
		{
			name:     "scope with a space",
			entraApp: `{"tenant_id": "t", "client_id": "00000000-0000-4000-8000-0000000000c1", "client_secret": "s", "applications": {"a": {"scopes": ["x/.default y/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "invalid scope"},
		},
		{
			name:     "negative refresh window",
			entraApp: `{"tenant_id": "t", "client_id": "00000000-0000-4000-8000-0000000000c1", "client_secret": "s", "refresh_window": -1000000000, "applications": {"a": {"scopes": ["x/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "refresh_window"},
		},
		{
			name:     "bad redis url",
			entraApp: `{"tenant_id": "t", "client_id": "00000000-0000-4000-8000-0000000000c1", "client_secret": "s", "redis": {"url": "http://cache:6379", "insecure_plaintext": true}, "applications": {"a": {"scopes": ["x/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "redis"},
		},
		{
			name:     "redis url password not echoed",
			entraApp: `{"tenant_id": "t", "client_id": "00000000-0000-4000-8000-0000000000c1", "client_secret": "s", "redis": {"url": "redis://:s3cr3t-from-env@cache:notaport", "insecure_plaintext": true}, "applications": {"a": {"scopes": ["x/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "redis"},
		},
		{
			name:     "redis url and addrs",
			entraApp: `{"tenant_id": "t", "client_id": "00000000-0000-4000-8000-0000000000c1", "client_secret": "s", "redis": {"url": "redis://a:6379", "addrs": ["b:6379"], "insecure_plaintext": true}, "applications": {"a": {"scopes": ["x/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "either a URL or addrs"},
		},
		{
			name:     "encryption key not 32 bytes",
			entraApp: `{"tenant_id": "t", "client_id": "00000000-0000-4000-8000-0000000000c1", "client_secret": "s", "redis": {"url": "redis://a:6379", "encryption_keys": ["{env.ENTRA_UNIT_SECRET}"]}, "applications": {"a": {"scopes": ["x/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "encryption_key #1"},
		},
		{
			name:     "redis without encryption_key",
			entraApp: `{"tenant_id": "t", "client_id": "00000000-0000-4000-8000-0000000000c1", "client_secret": "s", "redis": {"url": "redis://a:6379"}, "applications": {"a": {"scopes": ["x/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG: redis encryption_key: is required", "head -c 32 /dev/urandom | base64", "insecure_plaintext"},
		},
		{
			name:     "redis with encryption_key and insecure_plaintext",
			entraApp: `{"tenant_id": "t", "client_id": "00000000-0000-4000-8000-0000000000c1", "client_secret": "s", "redis": {"url": "redis://a:6379", "insecure_plaintext": true, "encryption_keys": ["MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="]}, "applications": {"a": {"scopes": ["x/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG: redis insecure_plaintext", "encryption_key"},
		},
		{
			name:     "redis tls_ca unreadable",
			entraApp: `{"tenant_id": "t", "client_id": "00000000-0000-4000-8000-0000000000c1", "client_secret": "s", "redis": {"url": "rediss://a:6380", "tls_ca": "/nonexistent/ca.pem", "insecure_plaintext": true}, "applications": {"a": {"scopes": ["x/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "redis tls_ca", "reading the CA file"},
		},
		{
			name:     "two credentials",
			entraApp: `{"tenant_id": "t", "client_id": "00000000-0000-4000-8000-0000000000c1", "client_secret": "s3cr3t-from-env", "federated_token_file": "/tmp/token", "applications": {"a": {"scopes": ["x/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "credential", "client_secret and federated_token_file", "exactly one"},
		},
		{
			name:     "application with another client and no credential",
			entraApp: `{"tenant_id": "t", "client_id": "00000000-0000-4000-8000-0000000000c1", "client_secret": "s3cr3t-from-env", "applications": {"a": {"scopes": ["x/.default"], "client_id": "other"}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "application a: credential", "needs its own credential"},
		},
		{
			name:     "application identity alone is enough",
			entraApp: `{"applications": {"a": {"scopes": ["x/.default"], "tenant_id": "t", "client_id": "00000000-0000-4000-8000-0000000000c1", "client_secret": "s"}}}`, application: "a",
		},
		{
			name:     "managed identity needs no tenant",
			entraApp: `{"managed_identity": {}, "applications": {"a": {"scopes": ["https://vault.azure.net/.default"]}}}`, application: "a",
		},
		{
			name:     "authority host naming the tenant (MSAL's authority)",
			entraApp: `{"tenant_id": "t", "client_id": "00000000-0000-4000-8000-0000000000c1", "client_secret": "{env.ENTRA_UNIT_SECRET}", "authority_host": "https://login.microsoftonline.com/t", "applications": {"a": {"scopes": ["x/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "authority_host: must not name the tenant or the endpoint", "the tenant goes in tenant_id"},
		},
		{
			name:     "plain http authority off loopback",
			entraApp: `{"tenant_id": "t", "client_id": "00000000-0000-4000-8000-0000000000c1", "client_secret": "s", "authority_host": "http://login.example.com", "applications": {"a": {"scopes": ["x/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "authority_host", "https"},
		},
		{
			name:     "reserved token request param",
			entraApp: `{"tenant_id": "t", "client_id": "00000000-0000-4000-8000-0000000000c1", "client_secret": "s", "token_request_params": {"client_secret": "x"}, "applications": {"a": {"scopes": ["x/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "token_request_param"},
		},
		{
			name:     "managed identity with two scopes",
			entraApp: `{"managed_identity": {}, "applications": {"a": {"scopes": ["https://vault.azure.net/.default", "https://storage.azure.com/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "application a: scope", "exactly one resource"},
		},
		{
			name:     "default secret never goes to another host",
			entraApp: `{"tenant_id": "t", "client_id": "00000000-0000-4000-8000-0000000000c1", "client_secret": "s3cr3t-from-env", "applications": {"a": {"scopes": ["x/.default"], "token_endpoint": "https://elsewhere.example/token"}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "application a: credential", "never sent to another client or host"},
		},
		{
			name:     "application tenant under a default token endpoint",
			entraApp: `{"token_endpoint": "https://login.example/t/oauth2/v2.0/token", "client_id": "00000000-0000-4000-8000-0000000000c1", "client_secret": "s", "applications": {"a": {"scopes": ["x/.default"], "tenant_id": "other"}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "application a: tenant_id", "token_endpoint"},
		},
		{
			name:     "refresh window longer than a token",
			entraApp: `{"tenant_id": "t", "client_id": "00000000-0000-4000-8000-0000000000c1", "client_secret": "s", "refresh_window": "2h", "applications": {"a": {"scopes": ["x/.default"]}}}`, application: "a",
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
			entraApp: `{"tenant_id": "t", "client_id": "00000000-0000-4000-8000-0000000000c1", "client_certificate": {"certificate": "/nonexistent/cert.pem"}, "applications": {"a": {"scopes": ["x/.default"]}}}`, application: "a",
			wantErr: []string{"MICROSOFT_PROVIDER_INVALID_CONFIG", "client_certificate"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := apptest.ValidateConfig(t, apptest.JSONConfig(tc.entraApp, tc.application))
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
	const app = `{"tenant_id": "t", "client_id": "00000000-0000-4000-8000-0000000000c1", "client_secret": "s", "applications": {"a": {"scopes": ["x/.default"]}}}`
	err := apptest.ValidateConfig(t, apptest.JSONConfigWithHandler(app, `"application": "a", "purge_on_status": [401, 200]`))
	if err == nil || !strings.Contains(err.Error(), "MICROSOFT_PROVIDER_INVALID_CONFIG: entra_token purge_on_status: 200") {
		t.Fatalf("error = %v, want purge_on_status 200 rejected", err)
	}
	if err := apptest.ValidateConfig(t, apptest.JSONConfigWithHandler(app, `"application": "a", "purge_on_status": []`)); err != nil {
		t.Fatalf("an empty purge_on_status (purging disabled) was rejected: %v", err)
	}
}

func TestHeaderThatCannotCarryTheTokenIsRejectedAtLoad(t *testing.T) {
	const app = `{"tenant_id": "t", "client_id": "00000000-0000-4000-8000-0000000000c1", "client_secret": "s", "applications": {"a": {"scopes": ["x/.default"]}}}`
	for _, header := range []string{"Proxy-Authorization", "connection", "Host", "Content-Length", "Trailer"} {
		err := apptest.ValidateConfig(t, apptest.JSONConfigWithHandler(app, `"application": "a", "header": "`+header+`"`))
		if err == nil || !strings.Contains(err.Error(), "cannot carry the token") {
			t.Errorf("header %s: error = %v, want it refused", header, err)
		}
	}
	if err := apptest.ValidateConfig(t, apptest.JSONConfigWithHandler(app, `"application": "a", "header": "X-Api-Token"`)); err != nil {
		t.Errorf("header X-Api-Token refused: %v", err)
	}
}

// TestAHandlerThatFailsToProvisionMakesNoSeries: a config rejected at load
// (an application name that is not configured) leaves no metric series
// behind, so configs posted to the admin API cannot grow the metrics.
func TestAHandlerThatFailsToProvisionMakesNoSeries(t *testing.T) {
	before := testutil.CollectAndCount(requests)
	if err := apptest.ValidateConfig(t, apptest.JSONConfig(`{"tenant_id": "t", "client_id": "00000000-0000-4000-8000-0000000000c1", "client_secret": "s",
		"applications": {"graph-api": {"scopes": ["https://graph.microsoft.com/.default"]}}}`, "no-such-application")); err == nil {
		t.Fatal("config accepted")
	}
	if after := testutil.CollectAndCount(requests); after != before {
		t.Errorf("requests_total series %d -> %d after a rejected config", before, after)
	}
}

// TestPurgeOnStatusOnAnOnBehalfOfApplicationIsLoggedAsIgnored: purge_on_status
// set for an on-behalf-of application, which drops exchanged tokens only on
// a claims challenge, is named at load; left unset, nothing is logged.
func TestPurgeOnStatusOnAnOnBehalfOfApplicationIsLoggedAsIgnored(t *testing.T) {
	const app = `{"tenant_id": "11111111-1111-4111-8111-111111111111", "client_id": "00000000-0000-4000-8000-0000000000c1", "client_secret": "s",
		"applications": {"a": {"scopes": ["x/.default"], "on_behalf_of": {}}}}`
	for _, tc := range []struct {
		fields string
		warned bool
	}{
		{`"application": "a", "purge_on_status": [401, 403]`, true},
		{`"application": "a"`, false},
	} {
		logFile := filepath.Join(t.TempDir(), "caddy.log")
		config := strings.Replace(apptest.JSONConfigWithHandler(app, tc.fields), `{"admin": {"disabled": true},`,
			`{"admin": {"disabled": true}, "logging": {"logs": {"default": {"writer": {"output": "file", "filename": "`+logFile+`"}}}},`, 1)
		if err := apptest.ValidateConfig(t, config); err != nil {
			t.Fatalf("%s: %v", tc.fields, err)
		}
		logged, _ := os.ReadFile(logFile)
		if got := strings.Contains(string(logged), "purge_on_status does not apply to an on-behalf-of application"); got != tc.warned {
			t.Errorf("%s: warned %v, want %v; log:\n%s", tc.fields, got, tc.warned, logged)
		}
	}
}
