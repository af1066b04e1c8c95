package entraapp

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// client_auth is an identity option: the global identity's and an
// application's own, post or basic, refused otherwise when parsed.
func TestUnmarshalCaddyfileClientAuth(t *testing.T) {
	var app App
	err := app.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`entra {
		client_id c
		client_secret s
		client_auth basic
		application own api://own/.default {
			client_id other
			client_secret o
			client_auth post
		}
	}`))
	if err != nil {
		t.Fatal(err)
	}
	if app.ClientAuth != "basic" || app.Applications["own"].ClientAuth != "post" {
		t.Errorf("client_auth = %q, application's %q; want basic, post", app.ClientAuth, app.Applications["own"].ClientAuth)
	}
	for input, want := range map[string]string{
		"entra {\n client_auth Basic\n }":                    "client_auth: want post, basic, tls_client_auth or self_signed_tls_client_auth",
		"entra {\n client_auth private_key_jwt\n }":          "client_auth: want post, basic, tls_client_auth or self_signed_tls_client_auth",
		"entra {\n client_auth\n }":                          "wrong argument count",
		"entra {\n client_auth basic\n client_auth post\n }": "client_auth: may appear only once",
	} {
		var app App
		if err := app.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", input, err, want)
		}
	}
}

// An application takes the default identity's client_auth where it keeps
// the default token endpoint and the same kind of credential, and only
// there.
func TestApplicationInheritsClientAuth(t *testing.T) {
	parent := IdentityConfig{ClientID: "c", ClientSecret: "s", ClientAuth: "basic", TokenEndpoint: "https://idp.example/token"}
	for _, tt := range []struct {
		name string
		app  IdentityConfig
		want string
	}{
		{"inherits the credential", IdentityConfig{}, "basic"},
		{"own secret of the same client", IdentityConfig{ClientSecret: "s2"}, "basic"},
		{"own client and secret", IdentityConfig{ClientID: "c2", ClientSecret: "s2"}, "basic"},
		{"own setting", IdentityConfig{ClientAuth: "post"}, "post"},
		{"own endpoint", IdentityConfig{ClientID: "c2", ClientSecret: "s2", TokenEndpoint: "https://other.example/token"}, ""},
		{"another kind of credential", IdentityConfig{FederatedTokenFile: "/token"}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.app.inherit(parent, "application a: ")
			if err != nil {
				t.Fatal(err)
			}
			if got.ClientAuth != tt.want {
				t.Errorf("client_auth = %q, want %q", got.ClientAuth, tt.want)
			}
		})
	}
}
