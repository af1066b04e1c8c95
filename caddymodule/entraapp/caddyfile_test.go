package entraapp

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

func TestUnmarshalCaddyfileApp(t *testing.T) {
	tests := []struct {
		name    string
		input   string
		want    App
		wantErr string
	}{
		{
			name: "full",
			input: `entra {
				tenant_id      {env.ENTRA_TENANT_ID}
				client_id      client
				client_secret  {file./run/secrets/entra}
				authority_host https://login.microsoftonline.us
				token_endpoint https://idp.example/oauth2/token
				refresh_window 2m
				redis {env.REDIS_URL} {
					key_prefix sidecar:
					insecure_plaintext
				}
				application graph-api {
					scope https://graph.microsoft.com/.default
				}
				application orders-api api://orders/.default
			}`,
			want: App{
				IdentityConfig: IdentityConfig{
					TenantID:      "{env.ENTRA_TENANT_ID}",
					ClientID:      "client",
					ClientSecret:  "{file./run/secrets/entra}",
					AuthorityHost: "https://login.microsoftonline.us",
					TokenEndpoint: "https://idp.example/oauth2/token",
				},
				RefreshWindow: caddy.Duration(2 * 60 * 1e9),
				Redis:         &RedisConfig{URL: "{env.REDIS_URL}", KeyPrefix: "sidecar:", InsecurePlaintext: true},
				Applications: map[string]*Application{
					"graph-api":  {Scopes: []string{"https://graph.microsoft.com/.default"}},
					"orders-api": {Scopes: []string{"api://orders/.default"}},
				},
			},
		},
		{
			name:  "several scopes",
			input: "entra {\n application multi {\n scope a/.default b/.default\n scope c/.default\n }\n }",
			want: App{Applications: map[string]*Application{
				"multi": {Scopes: []string{"a/.default", "b/.default", "c/.default"}},
			}},
		},
		{
			name: "credentials, identities and fleet options",
			input: `entra {
				tenant_id t
				client_id c
				client_certificate /etc/entra/cert.pem /etc/entra/key.pem {
					key_password {env.KEY_PASSWORD}
					send_x5c
				}
				token_request_param resource api://orders
				refresh_ahead 75%
				wait_timeout 3s
				token_request_concurrency 32
				redis {
					addrs 10.0.0.1:6379 10.0.0.2:6379
					addrs 10.0.0.3:6379
					master_name mymaster
					username sidecar
					password {env.REDIS_PASSWORD}
					db 2
					tls
					tls_ca /etc/redis/ca.pem
					tls_server_name redis.internal
					timeout 150ms
					encryption_key {env.KEY_NEW}
					encryption_key {env.KEY_OLD}
				}
				application wi {
					scope api://wi/.default
					workload_identity
				}
				application mi api://mi/.default {
					managed_identity 33333333-0000-4000-8000-000000000001 {
						endpoint http://127.0.0.1:9400/metadata/identity/oauth2/token
					}
				}
				application mi2 api://mi/.default {
					managed_identity {
						resource_id /subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/n
					}
				}
				application mi3 api://mi/.default {
					managed_identity {
						object_id 44444444-0000-4000-8000-000000000001
					}
				}
				application other api://other/.default {
					tenant_id other-tenant
					client_id other-client
					federated_token_file /var/run/secrets/token
					authority_host https://login.microsoftonline.us
				}
			}`,
			want: App{
				IdentityConfig: IdentityConfig{
					TenantID: "t", ClientID: "c",
					ClientCertificate: &ClientCertificateConfig{
						Certificate: "/etc/entra/cert.pem", Key: "/etc/entra/key.pem",
						KeyPassword: "{env.KEY_PASSWORD}", SendX5C: true,
					},
					TokenRequestParams: map[string]string{"resource": "api://orders"},
				},
				RefreshAhead:            0.75,
				WaitTimeout:             caddy.Duration(3 * 1e9),
				TokenRequestConcurrency: 32,
				Redis: &RedisConfig{
					Addrs:      []string{"10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.3:6379"},
					MasterName: "mymaster", Username: "sidecar", Password: "{env.REDIS_PASSWORD}",
					DB: 2, TLS: true, TLSCA: "/etc/redis/ca.pem", TLSServerName: "redis.internal",
					Timeout:        caddy.Duration(150 * 1e6),
					EncryptionKeys: []string{"{env.KEY_NEW}", "{env.KEY_OLD}"},
				},
				Applications: map[string]*Application{
					"wi": {Scopes: []string{"api://wi/.default"}, IdentityConfig: IdentityConfig{WorkloadIdentity: true}},
					"mi": {Scopes: []string{"api://mi/.default"}, IdentityConfig: IdentityConfig{ManagedIdentity: &ManagedIdentityConfig{
						ClientID: "33333333-0000-4000-8000-000000000001",
						Endpoint: "http://127.0.0.1:9400/metadata/identity/oauth2/token",
					}}},
					"mi2": {Scopes: []string{"api://mi/.default"}, IdentityConfig: IdentityConfig{ManagedIdentity: &ManagedIdentityConfig{
						ResourceID: "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/n",
					}}},
					"mi3": {Scopes: []string{"api://mi/.default"}, IdentityConfig: IdentityConfig{ManagedIdentity: &ManagedIdentityConfig{
						ObjectID: "44444444-0000-4000-8000-000000000001",
					}}},
					"other": {Scopes: []string{"api://other/.default"}, IdentityConfig: IdentityConfig{
						TenantID: "other-tenant", ClientID: "other-client",
						FederatedTokenFile: "/var/run/secrets/token", AuthorityHost: "https://login.microsoftonline.us",
					}},
				},
			},
		},
		{name: "unknown option", input: "entra {\n tenant tid\n }", wantErr: "unrecognized entra option 'tenant'"},
		{name: "certificate without file", input: "entra {\n client_certificate\n }", wantErr: "client_certificate: want <cert.pem> [<key.pem>]"},
		{name: "certificate twice", input: "entra {\n client_certificate a\n client_certificate b\n }", wantErr: "client_certificate: may appear only once"},
		{name: "managed identity twice", input: "entra {\n managed_identity\n managed_identity\n }", wantErr: "managed_identity: may appear only once"},
		{name: "on_behalf_of twice", input: "entra {\n application a s {\n on_behalf_of\n on_behalf_of\n }\n }", wantErr: "on_behalf_of: may appear only once"},
		{name: "application prefetch twice", input: "entra {\n application a s {\n prefetch\n prefetch off\n }\n }", wantErr: "prefetch: may appear only once"},
		{name: "unknown certificate option", input: "entra {\n client_certificate a {\n x5c\n }\n }", wantErr: "unrecognized client_certificate option 'x5c'"},
		{name: "managed identity extra arg", input: "entra {\n managed_identity a b\n }", wantErr: "wrong argument count"},
		{name: "managed identity object_id twice", input: "entra {\n managed_identity {\n object_id a\n object_id b\n }\n }", wantErr: "object_id: may appear only once"},
		{name: "managed identity unknown option", input: "entra {\n managed_identity {\n principal_id a\n }\n }", wantErr: "unrecognized managed_identity option 'principal_id'"},
		{name: "workload identity arg", input: "entra {\n workload_identity yes\n }", wantErr: "wrong argument count"},
		{name: "request param arity", input: "entra {\n token_request_param resource\n }", wantErr: "token_request_param: want <name> <value>"},
		{name: "request param twice", input: "entra {\n token_request_param a 1\n token_request_param a 2\n }", wantErr: "token_request_param a: set twice"},
		{name: "refresh ahead out of range", input: "entra {\n refresh_ahead 1.5\n }", wantErr: "refresh_ahead"},
		{name: "refresh ahead percent zero", input: "entra {\n refresh_ahead 0%\n }", wantErr: "refresh_ahead"},
		{name: "wait timeout zero", input: "entra {\n wait_timeout 0s\n }", wantErr: "wait_timeout: must be positive"},
		{name: "token request concurrency zero", input: "entra {\n token_request_concurrency 0\n }", wantErr: "token_request_concurrency: must be a whole number of at least 1"},
		{name: "token request concurrency not a number", input: "entra {\n token_request_concurrency many\n }", wantErr: "token_request_concurrency: must be a whole number"},
		{name: "refresh ahead twice", input: "entra {\n refresh_ahead 0.5\n refresh_ahead 0.6\n }", wantErr: "refresh_ahead: may appear only once"},
		{name: "token request concurrency twice", input: "entra {\n token_request_concurrency 4\n token_request_concurrency 8\n }", wantErr: "token_request_concurrency: may appear only once"},
		{name: "redis db twice", input: "entra {\n redis redis://a {\n db 0\n db 1\n }\n }", wantErr: "db: may appear only once"},
		{name: "redis db twice after a number", input: "entra {\n redis redis://a {\n db 2\n db 0\n }\n }", wantErr: "db: may appear only once"},
		{name: "redis db not a number", input: "entra {\n redis redis://a {\n db two\n }\n }", wantErr: "db: want a database number"},
		{name: "unknown application option", input: "entra {\n application a s/.default {\n refresh_window 1s\n }\n }", wantErr: "unrecognized application option 'refresh_window'"},
		{name: "option twice", input: "entra {\n client_id a\n client_id b\n }", wantErr: "client_id: may appear only once"},
		{name: "missing value", input: "entra {\n client_id\n }", wantErr: "wrong argument count"},
		{name: "extra value", input: "entra {\n client_id a b\n }", wantErr: "wrong argument count"},
		{name: "bad window", input: "entra {\n refresh_window soon\n }", wantErr: "refresh_window"},
		{name: "negative window", input: "entra {\n refresh_window -5s\n }", wantErr: "refresh_window: must be positive"},
		{name: "redis without url", input: "entra {\n redis\n }", wantErr: "redis: a redis:// or rediss:// URL, or addrs, is required"},
		{name: "redis twice", input: "entra {\n redis redis://a\n redis redis://b\n }", wantErr: "redis: may appear only once"},
		{name: "insecure_plaintext takes no argument", input: "entra {\n redis redis://a {\n insecure_plaintext yes\n }\n }", wantErr: "wrong argument count"},
		{name: "unknown redis option", input: "entra {\n redis redis://a {\n prefix x\n }\n }", wantErr: "unrecognized redis option 'prefix'"},
		{name: "application without name", input: "entra {\n application\n }", wantErr: "application: a name is required"},
		{name: "application without scope", input: "entra {\n application a\n }", wantErr: "application a: at least one scope is required"},
		{name: "application twice", input: "entra {\n application a s/.default\n application a s/.default\n }", wantErr: "application a: defined twice"},
		{name: "empty scope line", input: "entra {\n application a {\n scope\n }\n }", wantErr: "wrong argument count"},
		{name: "arguments on entra", input: "entra something {\n }", wantErr: "wrong argument count"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got App
			err := got.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			gotJSON, _ := json.Marshal(got)
			wantJSON, _ := json.Marshal(tc.want)
			if !bytes.Equal(gotJSON, wantJSON) {
				t.Errorf("got  %s\nwant %s", gotJSON, wantJSON)
			}
		})
	}
}

// TestGlobalOptionTwiceSaysWhere: a second entra block is refused with
// the file and line of the second one, not "at :0".
func TestGlobalOptionTwiceSaysWhere(t *testing.T) {
	input := "{\n\tentra {\n\t\ttenant_id t\n\t}\n\tentra {\n\t\ttenant_id u\n\t}\n}\n:8080 {\n\trespond ok\n}\n"
	_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(input), map[string]any{"filename": "Caddyfile"})
	if err == nil || !strings.Contains(err.Error(), "may appear only once, at Caddyfile:5") {
		t.Fatalf("err = %v, want the global option refused at Caddyfile:5", err)
	}
}

// TestSecretWithASpaceIsRefusedWithoutItsValue: an unquoted secret holding
// a space is two tokens, and d.ArgErr would quote the second; a secret
// option is refused naming the option, quoting no part of the value.
func TestSecretWithASpaceIsRefusedWithoutItsValue(t *testing.T) {
	const secret = "s3cretHalfOne s3cretHalfTwo"
	for _, tc := range []struct {
		name, input, wantErr string
	}{
		{"client_secret", "entra {\n client_secret " + secret + "\n }", "client_secret: want exactly one value (quote a value holding spaces)"},
		{"application client_secret", "entra {\n application a s {\n client_secret " + secret + "\n }\n }", "client_secret: want exactly one value"},
		{"key_password", "entra {\n client_certificate c.pem {\n key_password " + secret + "\n }\n }", "key_password: want exactly one value"},
		{"redis password", "entra {\n redis redis://a {\n password " + secret + "\n }\n }", "password: want exactly one value"},
		{"redis encryption_key", "entra {\n redis redis://a {\n encryption_key " + secret + "\n }\n }", "encryption_key: want exactly one value"},
		{"redis url", "entra {\n redis redis://:" + secret + "@a:6379\n }", "redis: want at most one URL (quote a value holding spaces)"},
		{"client_secret without a value", "entra {\n client_secret\n }", "client_secret: want exactly one value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var app App
			err := app.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), "s3cretHalf") {
				t.Errorf("error %q quotes the secret", err)
			}
		})
	}
	// A quoted one is one value.
	var app App
	if err := app.UnmarshalCaddyfile(caddyfile.NewTestDispenser("entra {\n client_secret \"" + secret + "\"\n }")); err != nil || app.ClientSecret != secret {
		t.Fatalf("quoted: %v, client_secret %q", err, app.ClientSecret)
	}
}

// adaptWithEnvSecret adapts a Caddyfile whose client_secret is
// {$ENTRA_TEST_SECRET}, set to secret, and returns it with the error.
func adaptWithEnvSecret(t *testing.T, secret string) (string, error) {
	t.Setenv("ENTRA_TEST_SECRET", secret)
	input := "{\n\tentra {\n\t\ttenant_id t\n\t\tclient_id c\n\t\tclient_secret {$ENTRA_TEST_SECRET}\n\t}\n}\n:8080 {\n\trespond ok\n}\n"
	_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(input), map[string]any{"filename": "Caddyfile"})
	return input, err
}

// TestEnvSubstitutedSecretWithASpaceIsRefusedWithoutItsValue: {$VAR} is
// substituted before the Caddyfile is split into tokens, so a value with a
// space becomes two, as if written unquoted.
func TestEnvSubstitutedSecretWithASpaceIsRefusedWithoutItsValue(t *testing.T) {
	_, err := adaptWithEnvSecret(t, "s3cretHalfOne s3cretHalfTwo")
	if err == nil || !strings.Contains(err.Error(), "client_secret: want exactly one value (quote a value holding spaces), at Caddyfile:5") {
		t.Fatalf("error = %v, want client_secret refused at Caddyfile:5", err)
	}
	if strings.Contains(err.Error(), "s3cretHalf") {
		t.Errorf("error %q quotes the secret", err)
	}
}

// A {$VAR} secret holding a line break is split into two lines: the second
// half starts a line, and the refusal of it as an option quotes it only if
// it looks like an option's name.
func TestEnvSubstitutedSecretOnTwoLinesIsRefusedWithoutItsValue(t *testing.T) {
	input, err := adaptWithEnvSecret(t, "s3cretHalfOne\nS3cret-Half/Two")
	if err == nil || !strings.Contains(err.Error(), "unrecognized entra option (not quoted") {
		t.Fatalf("error = %v, want the second line refused unquoted", err)
	}
	if strings.Contains(err.Error(), "Half") {
		t.Errorf("error %q quotes the secret", err)
	}
	_, _, err = caddyconfig.GetAdapter("caddyfile").Adapt([]byte(strings.Replace(input, "client_id c", "client_id c\n\t\tclient_sceret x", 1)), nil)
	if err == nil || !strings.Contains(err.Error(), "unrecognized entra option 'client_sceret'") {
		t.Errorf("a misspelt option: %v, want it quoted", err)
	}
}
