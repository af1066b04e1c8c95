package entraapp

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/tokencache"
)

const (
	oboTenant      = "11111111-2222-4333-8444-555555555555"
	oboOtherTenant = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
	oboClient      = "22222222-0000-4000-8000-0000000000c1"
)

func TestUnmarshalCaddyfileOnBehalfOf(t *testing.T) {
	d := caddyfile.NewTestDispenser(`entra {
		client_capabilities cp1
		application graph-as-user {
			scope https://graph.microsoft.com/User.Read https://graph.microsoft.com/Mail.Read
			client_capabilities cp1 cp2
			on_behalf_of {
				header X-User-Token
				max_users 500
				allowed_tenants ` + oboOtherTenant + `
				audiences api://my-api
			}
		}
	}`)
	var a App
	if err := a.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	want := &Application{
		Scopes:             []string{"https://graph.microsoft.com/User.Read", "https://graph.microsoft.com/Mail.Read"},
		ClientCapabilities: []string{"cp1", "cp2"},
		OnBehalfOf: &OnBehalfOfConfig{Header: "X-User-Token", MaxUsers: 500,
			AllowedTenants: []string{oboOtherTenant}, Audiences: []string{"api://my-api"}},
	}
	if got := a.Applications["graph-as-user"]; !reflect.DeepEqual(got, want) {
		t.Errorf("application = %+v\nwant %+v", got, want)
	}
	if !reflect.DeepEqual(a.ClientCapabilities, []string{"cp1"}) {
		t.Errorf("global client_capabilities = %v", a.ClientCapabilities)
	}

	for input, wantErr := range map[string]string{
		"on_behalf_of {\n max_users 0\n }":               "max_users: must be a whole number of at least 1",
		"on_behalf_of {\n max_users -3\n }":              "max_users: must be a whole number of at least 1",
		"on_behalf_of {\n max_users 5\n max_users 6\n }": "max_users: may appear only once",
		"on_behalf_of {\n allowed_tenants\n }":           "allowed_tenants: at least one value is required",
		"on_behalf_of {\n header a b\n }":                "wrong argument count",
		"on_behalf_of {\n tenant x\n }":                  "unrecognized on_behalf_of option 'tenant'",
		"on_behalf_of\n on_behalf_of":                    "on_behalf_of: may appear only once",
		"on_behalf_of x":                                 "wrong argument count",
		"client_capabilities":                            "client_capabilities: at least one capability is required",
		"client_capabilities a\n client_capabilities b":  "client_capabilities: may appear only once",
	} {
		d := caddyfile.NewTestDispenser("entra {\n application a x/.default {\n " + input + "\n }\n }")
		var a App
		if err := a.UnmarshalCaddyfile(d); err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("%q: got %v, want %q", input, err, wantErr)
		}
	}
}

// oboApp is an entra app with one on-behalf-of application, whose identity
// and on_behalf_of the caller adjusts.
func oboApp(adjust func(id *IdentityConfig, obo *OnBehalfOfConfig, app *Application)) *App {
	app := &Application{Scopes: []string{"https://graph.microsoft.com/User.Read"}, OnBehalfOf: &OnBehalfOfConfig{}}
	a := &App{
		IdentityConfig: IdentityConfig{TenantID: oboTenant, ClientID: oboClient, ClientSecret: "s"},
		Applications:   map[string]*Application{"graph-as-user": app},
		logger:         zap.NewNop(),
	}
	if adjust != nil {
		adjust(&a.IdentityConfig, app.OnBehalfOf, app)
	}
	return a
}

func TestOnBehalfOfResolved(t *testing.T) {
	a := oboApp(func(_ *IdentityConfig, obo *OnBehalfOfConfig, _ *Application) {
		obo.AllowedTenants = []string{strings.ToUpper(oboOtherTenant)}
		obo.Audiences = []string{"api://my-api"}
	})
	a.ClientCapabilities = []string{"cp1"}
	s, err := a.resolveSettings(caddy.NewReplacer())
	if err != nil {
		t.Fatal(err)
	}
	got := s.applications[0]
	want := &onBehalfOf{Header: "Authorization", MaxUsers: DefaultMaxUsers, Rules: entra.UserTokenRules{
		TenantID: oboTenant, ClientID: oboClient, AllowedTenants: []string{oboOtherTenant}, Audiences: []string{"api://my-api"}}}
	if !reflect.DeepEqual(got.OnBehalfOf, want) {
		t.Errorf("on_behalf_of = %+v, want %+v", got.OnBehalfOf, want)
	}
	if !reflect.DeepEqual(got.Config.ClientCapabilities, []string{"cp1"}) {
		t.Errorf("client capabilities = %v, want the app's cp1", got.Config.ClientCapabilities)
	}
}

// A tenant given by domain name, in tenant_id or in a token endpoint shaped
// as Entra's, loads offline: its ID is resolved before the first user
// token is checked, not at load; allowed tenants stay GUIDs.
func TestOnBehalfOfDomainTenantLoads(t *testing.T) {
	for name, adjust := range map[string]func(id *IdentityConfig){
		"tenant_id": func(id *IdentityConfig) { id.TenantID = "contoso.onmicrosoft.com" },
		"token_endpoint": func(id *IdentityConfig) {
			id.TenantID, id.TokenEndpoint = "", "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
		},
	} {
		t.Run(name, func(t *testing.T) {
			a := oboApp(func(id *IdentityConfig, obo *OnBehalfOfConfig, _ *Application) {
				adjust(id)
				obo.AllowedTenants = []string{oboOtherTenant}
			})
			s, err := a.resolveSettings(caddy.NewReplacer())
			if err != nil {
				t.Fatal(err)
			}
			got := s.applications[0].OnBehalfOf.Rules
			want := entra.UserTokenRules{ClientID: oboClient, AllowedTenants: []string{oboOtherTenant}}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("rules = %+v, want %+v (the tenant's ID resolved later)", got, want)
			}
			if s.applications[0].Client.TenantDiscoveryURL() == "" {
				t.Error("no discovery URL to resolve the tenant's ID")
			}
		})
	}
	a := oboApp(func(id *IdentityConfig, obo *OnBehalfOfConfig, _ *Application) {
		id.TenantID = "contoso.onmicrosoft.com"
		obo.AllowedTenants = []string{"fabrikam.onmicrosoft.com"}
	})
	if _, err := a.resolveSettings(caddy.NewReplacer()); err == nil || !strings.Contains(err.Error(), "is not a tenant ID") {
		t.Errorf("a domain in allowed_tenants: %v, want refused", err)
	}
}

func TestOnBehalfOfRefusedAtLoad(t *testing.T) {
	tests := []struct {
		name    string
		adjust  func(id *IdentityConfig, obo *OnBehalfOfConfig, app *Application)
		wantErr string
	}{
		{"managed identity", func(id *IdentityConfig, _ *OnBehalfOfConfig, _ *Application) {
			id.ClientSecret, id.ClientID, id.ManagedIdentity = "", "", &ManagedIdentityConfig{}
		}, "application graph-as-user: on_behalf_of: a managed identity cannot exchange a user's token"},
		{"tenant domain beside a token endpoint elsewhere", func(id *IdentityConfig, _ *OnBehalfOfConfig, _ *Application) {
			id.TenantID, id.TokenEndpoint = "contoso.onmicrosoft.com", "https://idp.example/token"
		}, "application graph-as-user: on_behalf_of: needs tenant_id as the tenant's ID"},
		{"hop-by-hop header", func(_ *IdentityConfig, obo *OnBehalfOfConfig, _ *Application) {
			obo.Header = "Proxy-Authorization"
		}, `application graph-as-user: on_behalf_of header: "Proxy-Authorization" cannot carry the token`},
		{"invalid header", func(_ *IdentityConfig, obo *OnBehalfOfConfig, _ *Application) {
			obo.Header = "X User"
		}, `on_behalf_of header: "X User" is not a valid header name`},
		{"max_users negative", func(_ *IdentityConfig, obo *OnBehalfOfConfig, _ *Application) {
			obo.MaxUsers = -1
		}, "on_behalf_of max_users: must be at least 1"},
		{"tenant not a GUID", func(_ *IdentityConfig, obo *OnBehalfOfConfig, _ *Application) {
			obo.AllowedTenants = []string{"fabrikam.onmicrosoft.com"}
		}, `on_behalf_of allowed_tenants: "fabrikam.onmicrosoft.com" is not a tenant ID`},
		{"blank audience", func(_ *IdentityConfig, obo *OnBehalfOfConfig, _ *Application) {
			obo.Audiences = []string{"api://a b"}
		}, "on_behalf_of audiences"},
		{"prefetch", func(_ *IdentityConfig, _ *OnBehalfOfConfig, app *Application) {
			on := true
			app.Prefetch = &on
		}, "application graph-as-user: prefetch: an on-behalf-of application has no token of its own"},
		{"bad capability", func(_ *IdentityConfig, _ *OnBehalfOfConfig, app *Application) {
			app.ClientCapabilities = []string{`c"p1`}
		}, "client_capabilities"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := oboApp(tt.adjust)
			_, err := a.resolveSettings(caddy.NewReplacer())
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), CodeProviderInvalidConfig) {
				t.Fatalf("got %v, want %s with %q", err, CodeProviderInvalidConfig, tt.wantErr)
			}
		})
	}
}

func TestResourceDefaultScope(t *testing.T) {
	for scope, want := range map[string]string{
		"https://graph.microsoft.com/User.Read": "https://graph.microsoft.com/.default",
		"api://orders/Orders.Read":              "api://orders/.default",
		"api://orders/.default":                 "api://orders/.default",
		"User.Read":                             "https://graph.microsoft.com/.default",
		"api://11111111-2222-3333-4444-555555555555/access_as_user": "api://11111111-2222-3333-4444-555555555555/.default",
	} {
		if got := resourceDefaultScope(scope); got != want {
			t.Errorf("%s: got %s, want %s", scope, got, want)
		}
	}
}

// An on-behalf-of application with the identity and scopes of a
// client-credentials one has no token of its own all the same: the other
// application's token requests are counted, and its entry shows, under its
// own name only.
func TestOnBehalfOfApplicationTakesNoOtherApplicationsToken(t *testing.T) {
	const onBehalf = "graph-on-behalf" // registered after graph-api
	app, _, _ := newTestAppWith(t, unitClientSecret, func(a *App) {
		a.Applications[onBehalf] = &Application{Scopes: []string{"https://graph.microsoft.com/.default"}, OnBehalfOf: &OnBehalfOfConfig{}}
	})
	app.activate()
	own := counter(tokenRequests, "graph-api", string(tokencache.FetchSucceeded))
	foreign := counter(tokenRequests, onBehalf, string(tokencache.FetchSucceeded))
	if _, err := app.Token(t.Context(), "graph-api"); err != nil {
		t.Fatal(err)
	}
	if got := counter(tokenRequests, "graph-api", string(tokencache.FetchSucceeded)) - own; got != 1 {
		t.Errorf("graph-api's token request counted %v times for graph-api, want 1", got)
	}
	if got := counter(tokenRequests, onBehalf, string(tokencache.FetchSucceeded)) - foreign; got != 0 {
		t.Errorf("graph-api's token request counted %v times for %s, want 0", got, onBehalf)
	}
	info := app.status(onBehalf)
	if !info.OnBehalfOf || info.Fingerprint != "" || info.AccessTokenExpiresAt != nil || info.Source != "" {
		t.Errorf("%s's entry %+v, want onBehalfOf and no token", onBehalf, info)
	}
}

// An on-behalf-of application's exchanges are not shared through a Redis
// without encryption_key, so it subscribes to nothing there.
func TestOnBehalfOfApplicationSubscribesToNothingUnshared(t *testing.T) {
	mr := miniredis.RunT(t)
	a := oboApp(nil)
	a.Redis = &RedisConfig{URL: "redis://" + mr.Addr(), InsecurePlaintext: true}
	if err := a.provision(caddy.NewReplacer()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Cleanup() })
	if n := mr.PubSubNumPat(); n != 0 {
		t.Errorf("%d pattern subscriptions, want none", n)
	}
}

// prefetch, the app's, never fetches an on-behalf-of application's token:
// it has none of its own. Every other application's prefetch is armed.
func TestPrefetchLeavesOnBehalfOfApplicationsOut(t *testing.T) {
	app, _, _ := newTestAppWith(t, unitClientSecret, func(a *App) {
		a.Prefetch = true
		a.Applications["graph-as-user"] = &Application{Scopes: []string{"https://graph.microsoft.com/User.Read"}, OnBehalfOf: &OnBehalfOfConfig{}}
	})
	app.activate()
	app.startOperations()
	t.Cleanup(app.stopOperations)
	for _, name := range app.ApplicationNames() {
		info := app.status(name)
		if armed := info.NextRefreshAt != nil; armed == info.OnBehalfOf {
			t.Errorf("%s: prefetch armed %v, want %v", name, armed, !info.OnBehalfOf)
		}
	}
}

// An application's empty client_capabilities (JSON []) is none of its own,
// as an absent one: it inherits the entra block's list rather than
// clearing it (the Caddyfile cannot write an empty list, and the field's
// omitempty drops [] when the config is marshalled again); a list of its
// own replaces the block's.
func TestEmptyApplicationClientCapabilitiesInherit(t *testing.T) {
	app := new(App)
	err := json.Unmarshal([]byte(`{"tenant_id": "t", "client_id": "00000000-0000-4000-8000-0000000000c1", "client_secret": "s", "client_capabilities": ["cp1"],
		"applications": {
			"absent": {"scopes": ["api://a/.default"]},
			"empty": {"scopes": ["api://a/.default"], "client_capabilities": []},
			"own": {"scopes": ["api://a/.default"], "client_capabilities": ["cp2"]}
		}}`), app)
	if err != nil {
		t.Fatal(err)
	}
	s, err := app.resolveSettings(caddy.NewReplacer())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{"absent": {"cp1"}, "empty": {"cp1"}, "own": {"cp2"}}
	for _, ra := range s.applications {
		if !reflect.DeepEqual(ra.Config.ClientCapabilities, want[ra.Name]) {
			t.Errorf("application %s declares %v, want %v", ra.Name, ra.Config.ClientCapabilities, want[ra.Name])
		}
	}
}

// An application on a managed identity (which declares no capabilities)
// under an entra block that declares them is refused, naming the block's
// list as inherited and how to keep it from that application.
func TestInheritedClientCapabilitiesAManagedIdentityCannotTakeAreNamedAsInherited(t *testing.T) {
	for _, own := range []string{``, `, "client_capabilities": []`} {
		app := new(App)
		err := json.Unmarshal([]byte(`{"tenant_id": "11111111-0000-4000-8000-000000000001", "client_id": "00000000-0000-4000-8000-0000000000c1", "client_secret": "s",
			"client_capabilities": ["cp1"], "applications": {
				"graph": {"scopes": ["https://graph.microsoft.com/.default"]},
				"vault": {"scopes": ["https://vault.azure.net/.default"], "managed_identity": {}`+own+`}
			}}`), app)
		if err != nil {
			t.Fatal(err)
		}
		_, err = app.resolveSettings(caddy.NewReplacer())
		want := "application vault: client_capabilities: the entra block's, which it inherits, is not supported with " +
			"managed_identity: declare client_capabilities on the applications that take them instead"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("own %q: err = %v, want %q", own, err, want)
		}
	}
}
