package entraapp

import (
	"testing"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-entra/caddy-entra/binding"
	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/entra/entratest"
)

func TestSystemIdentityWhoseTokensNameNoClientKeepsItsProcessKey(t *testing.T) {
	emulator, server, err := entratest.NewServer(entratest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(server.Close)
	emulator.AddManagedIdentity("00000000-0000-4000-8000-00000000a0c1", true)
	emulator.SetOmitClientClaims(true) // an IMDS-compatible endpoint that leaves the client claim out
	endpoint := server.URL + entratest.IMDSPath
	core, logs := observer.New(zapcore.DebugLevel)
	app := &App{
		IdentityConfig: IdentityConfig{ManagedIdentity: &ManagedIdentityConfig{Endpoint: endpoint}},
		Applications:   map[string]*Application{"vault": {Scopes: []string{"https://vault.azure.net/.default"}}},
		logger:         zap.New(core),
	}
	if err := app.provision(caddy.NewReplacer()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = app.Cleanup() })
	h, _ := app.handle("vault")
	processKey := h.Key()

	for range 2 {
		if _, err := h.Refresh(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	client, err := entra.NewClient(entra.Config{ManagedIdentity: &entra.ManagedIdentityCredential{IMDSEndpoint: endpoint}})
	if err != nil {
		t.Fatal(err)
	}
	if cacheKey, unlearned := binding.CacheKey(client); !unlearned {
		t.Fatalf("cache key %q taken from tokens that name no client; want the per-process key", cacheKey)
	}
	if h, _ := app.handle("vault"); h.Key() != processKey {
		t.Fatal("the application was keyed again by tokens that name no client")
	}
	if n := logs.FilterMessageSnippet("do not name its tenant and client").Len(); n != 1 {
		t.Errorf("logged %d times that the identity cannot be learned, want once", n)
	}
}
