package entraapp

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-entra/caddy-entra/entra/entratest"
)

// TestValidateChecksEverySettingBeforeRegistering: Provision only loads;
// Validate resolves and checks every setting and registers nothing when one
// is wrong.
func TestValidateChecksEverySettingBeforeRegistering(t *testing.T) {
	app := &App{
		IdentityConfig: IdentityConfig{TenantID: "t", ClientID: "00000000-0000-4000-8000-0000000000c1", ClientSecret: "s"},
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

// newTestApp provisions an entra app against a fresh emulator without a
// caddy.Context, as Provision would, with logs observed.
func newTestApp(t *testing.T, secret string) (*App, *entratest.Emulator, *observer.ObservedLogs) {
	t.Helper()
	return newTestAppWith(t, secret, nil)
}

// newTestAppWith is newTestApp, its config adjusted by adjust (if not nil)
// before it is provisioned.
func newTestAppWith(t *testing.T, secret string, adjust func(*App)) (*App, *entratest.Emulator, *observer.ObservedLogs) {
	t.Helper()
	emulator, server, err := entratest.NewServer(entratest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(server.Close)
	emulator.AddClient(unitClientID, unitClientSecret)
	core, logs := observer.New(zapcore.DebugLevel)
	app := &App{
		IdentityConfig: IdentityConfig{
			AuthorityHost: server.URL,
			TenantID:      emulator.TenantID(),
			ClientID:      unitClientID,
			ClientSecret:  secret,
		},
		Applications: map[string]*Application{
			"graph-api":  {Scopes: []string{"https://graph.microsoft.com/.default"}},
			"orders-api": {Scopes: []string{"api://orders/.default"}},
		},
		// The tests call the sidecar by a service name, as in Docker Compose.
		Hosts:  []string{"sidecar"},
		logger: zap.New(core),
	}
	if adjust != nil {
		adjust(app)
	}
	if err := app.provision(caddy.NewReplacer()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = app.Cleanup() })
	return app, emulator, logs
}

const (
	unitClientID     = "22222222-0000-4000-8000-0000000000c1"
	unitClientSecret = "unit-secret-never-logged-4b1d"
)
