package caddymodule

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
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
				}
				application graph-api {
					scope https://graph.microsoft.com/.default
				}
				application orders-api api://orders/.default
			}`,
			want: App{
				TenantID:      "{env.ENTRA_TENANT_ID}",
				ClientID:      "client",
				ClientSecret:  "{file./run/secrets/entra}",
				AuthorityHost: "https://login.microsoftonline.us",
				TokenEndpoint: "https://idp.example/oauth2/token",
				RefreshWindow: caddy.Duration(2 * 60 * 1e9),
				Redis:         &RedisConfig{URL: "{env.REDIS_URL}", KeyPrefix: "sidecar:"},
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
		{name: "unknown option", input: "entra {\n tenant tid\n }", wantErr: "unrecognized entra option 'tenant'"},
		{name: "option twice", input: "entra {\n client_id a\n client_id b\n }", wantErr: "client_id: may appear only once"},
		{name: "missing value", input: "entra {\n client_secret\n }", wantErr: "wrong argument count"},
		{name: "extra value", input: "entra {\n client_id a b\n }", wantErr: "wrong argument count"},
		{name: "bad window", input: "entra {\n refresh_window soon\n }", wantErr: "refresh_window"},
		{name: "negative window", input: "entra {\n refresh_window -5s\n }", wantErr: "refresh_window: must be positive"},
		{name: "redis without url", input: "entra {\n redis\n }", wantErr: "redis: a redis:// or rediss:// URL is required"},
		{name: "redis twice", input: "entra {\n redis redis://a\n redis redis://b\n }", wantErr: "redis: may appear only once"},
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

func TestUnmarshalCaddyfileHandler(t *testing.T) {
	tests := []struct {
		input   string
		want    string
		wantErr string
	}{
		{input: "entra_token graph-api", want: "graph-api"},
		{input: "entra_token", wantErr: "an application name is required"},
		{input: "entra_token a b", wantErr: "wrong argument count"},
		{input: "entra_token a {\n header X-Token\n }", wantErr: "unrecognized entra_token option 'header'"},
	}
	for _, tc := range tests {
		t.Run(tc.input, func(t *testing.T) {
			var h Handler
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || h.Application != tc.want {
				t.Fatalf("application = %q, err = %v; want %q", h.Application, err, tc.want)
			}
		})
	}
}

// TestCaddyfileAdapt adapts each testdata/adapt/*.caddyfiletest (a Caddyfile,
// a line of ten dashes, the expected JSON) and compares the JSON.
func TestCaddyfileAdapt(t *testing.T) {
	files, err := filepath.Glob("testdata/adapt/*.caddyfiletest")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			input, expected, ok := strings.Cut(string(data), "----------")
			if !ok {
				t.Fatal("golden file lacks the ---------- separator")
			}
			adapted, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(strings.TrimSpace(input)+"\n"), nil)
			if err != nil {
				t.Fatalf("adapting: %v", err)
			}
			for _, w := range warnings {
				t.Logf("adapt warning: %s", w.Message)
			}
			var got, want bytes.Buffer
			if err := json.Indent(&got, adapted, "", "\t"); err != nil {
				t.Fatal(err)
			}
			if err := json.Indent(&want, []byte(strings.TrimSpace(expected)), "", "\t"); err != nil {
				t.Fatalf("expected JSON is invalid: %v", err)
			}
			if got.String() != want.String() {
				t.Errorf("adapted JSON differs.\ngot:\n%s\nwant:\n%s", got.String(), want.String())
			}
		})
	}
}
