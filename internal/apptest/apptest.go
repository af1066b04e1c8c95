// Package apptest provisions an entra app against the token endpoint
// emulator, and holds the requests and checks the handler packages' tests
// share. It is for tests only.
package apptest

import (
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-entra/caddy-entra/caddymodule/entraapp"
	"github.com/caddy-entra/caddy-entra/entra/entratest"
)

// The client NewApp's emulator knows.
const (
	ClientID     = "22222222-0000-4000-8000-0000000000c1"
	ClientSecret = "unit-secret-never-logged-4b1d"
)

// loggers are the loggers of the apps NewApp made.
var loggers sync.Map // *entraapp.App -> *zap.Logger

// NewApp provisions an entra app with the applications graph-api and
// orders-api against a fresh emulator, without a caddy.Context, as
// Provision would, with logs observed; secret is its client secret.
func NewApp(t testing.TB, secret string) (*entraapp.App, *entratest.Emulator, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	app, emulator := NewAppLogging(t, secret, zap.New(core))
	return app, emulator, logs
}

// NewAppLogging is NewApp logging to logger.
func NewAppLogging(t testing.TB, secret string, logger *zap.Logger) (*entraapp.App, *entratest.Emulator) {
	t.Helper()
	return newApp(t, secret, logger, nil)
}

// The on-behalf-of application of NewOnBehalfOfApp, and the tenant it
// accepts users of besides the emulator's.
const (
	OnBehalfOfApplication = "graph-as-user"
	OnBehalfOfScope       = "https://graph.microsoft.com/User.Read"
	AllowedTenant         = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
	ForeignTenant         = "ffffffff-bbbb-4ccc-8ddd-eeeeeeeeeeee"
)

// NewOnBehalfOfApp is NewApp with, besides graph-api and orders-api, the
// on-behalf-of application graph-as-user (scope OnBehalfOfScope, users of
// AllowedTenant accepted), adjusted by adjust if not nil; the emulator
// also serves AllowedTenant and ForeignTenant.
func NewOnBehalfOfApp(t testing.TB, adjust func(*entraapp.Application)) (*entraapp.App, *entratest.Emulator, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	app, emulator := newApp(t, ClientSecret, zap.New(core), func(a *entraapp.App) {
		obo := &entraapp.Application{Scopes: []string{OnBehalfOfScope},
			OnBehalfOf: &entraapp.OnBehalfOfConfig{AllowedTenants: []string{AllowedTenant}}}
		if adjust != nil {
			adjust(obo)
		}
		a.Applications[OnBehalfOfApplication] = obo
	})
	return app, emulator, logs
}

// UserToken issues a token of the user oid in tenant (the emulator's when
// empty) for the middle tier (aud api://<ClientID>), living lifetime (the
// emulator's default when 0; negative: expired).
func UserToken(t testing.TB, emulator *entratest.Emulator, oid, tenant string, lifetime time.Duration) string {
	t.Helper()
	token, err := emulator.IssueUserToken(entratest.UserToken{ObjectID: oid, TenantID: tenant,
		Audience: "api://" + ClientID, Lifetime: lifetime})
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// newApp is NewAppLogging, the config adjusted by adjust if not nil.
func newApp(t testing.TB, secret string, logger *zap.Logger, adjust func(*entraapp.App)) (*entraapp.App, *entratest.Emulator) {
	t.Helper()
	emulator, server, err := entratest.NewServer(entratest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(server.Close)
	emulator.AddClient(ClientID, ClientSecret)
	for _, tenant := range []string{AllowedTenant, ForeignTenant} {
		if err := emulator.AddTenant(tenant); err != nil {
			t.Fatal(err)
		}
	}
	app := &entraapp.App{
		IdentityConfig: entraapp.IdentityConfig{
			AuthorityHost: server.URL,
			TenantID:      emulator.TenantID(),
			ClientID:      ClientID,
			ClientSecret:  secret,
		},
		Applications: map[string]*entraapp.Application{
			"graph-api":  {Scopes: []string{"https://graph.microsoft.com/.default"}},
			"orders-api": {Scopes: []string{"api://orders/.default"}},
		},
		// The tests call the sidecar by a service name, as in Docker Compose.
		Hosts: []string{"sidecar"},
	}
	if adjust != nil {
		adjust(app)
	}
	if err := app.ProvisionForTest(logger); err != nil {
		t.Fatal(err)
	}
	loggers.Store(app, logger)
	t.Cleanup(func() {
		loggers.Delete(app)
		_ = app.Cleanup()
	})
	return app, emulator
}

// Logger is the logger of an app NewApp or NewAppLogging made.
func Logger(app *entraapp.App) *zap.Logger {
	logger, _ := loggers.Load(app)
	return logger.(*zap.Logger)
}

// ValidateConfig provisions a whole JSON config as a real load does, without
// starting any listener.
func ValidateConfig(t *testing.T, config string) error {
	t.Helper()
	var cfg caddy.Config
	if err := json.Unmarshal([]byte(config), &cfg); err != nil {
		t.Fatalf("bad test config: %v", err)
	}
	return caddy.Validate(&cfg)
}

// JSONConfig is an http server with one entra_token route and the given
// entra app (empty for none).
func JSONConfig(entraApp, application string) string {
	return JSONConfigWithHandler(entraApp, `"application": "`+application+`"`)
}

// JSONConfigWithHandler is JSONConfig with the handler's fields given raw.
func JSONConfigWithHandler(entraApp, handlerFields string) string {
	apps := `"http": {"servers": {"s": {"listen": [":0"], "routes": [{"handle": [
		{"handler": "entra_token", ` + handlerFields + `},
		{"handler": "static_response", "body": "ok"}]}]}}}`
	if entraApp != "" {
		apps = `"entra": ` + entraApp + `, ` + apps
	}
	return `{"admin": {"disabled": true}, "apps": {` + apps + `}}`
}
