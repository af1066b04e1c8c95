package integration

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/entra/entratest"
)

const (
	// tamperingWarning is what a replica logs when a Redis record holds
	// another identity's token.
	tamperingWarning = "token record does not match its identity; possible tampering"
	otherTenantID    = "22222222-0000-4000-8000-0000000007e2"
	otherClientID    = "33333333-0000-4000-8000-0000000c11e2"
	otherSecret      = "other-client-secret-Do-Not-Log-91b2"
)

// foreignToken gets a real token from an emulator's token endpoint at
// authority: what an attacker with another identity could plant.
func foreignToken(t *testing.T, authority, tenant, client, secret string) string {
	t.Helper()
	return foreignTokenFor(t, authority, tenant, client, secret, testScope)
}

// foreignTokenFor is foreignToken for another scope.
func foreignTokenFor(t *testing.T, authority, tenant, client, secret, scope string) string {
	t.Helper()
	c, err := entra.NewClient(entra.Config{AuthorityHost: authority, TenantID: tenant, ClientID: client, ClientSecret: secret})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := c.Token(context.Background(), []string{scope})
	if err != nil {
		t.Fatal(err)
	}
	return tok.AccessToken
}

// plantToken replaces the access token of the one record in Redis with
// token, keeping everything else (its expiry too), as anyone who can write
// to Redis can. It returns the record key.
func (f *fleet) plantToken(t *testing.T, token string) string {
	t.Helper()
	ctx := context.Background()
	records := f.records(t)
	if len(records) != 1 {
		t.Fatalf("redis holds %d records, want 1", len(records))
	}
	for key, record := range records {
		record["accessToken"] = token
		raw, err := json.Marshal(record)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.rdb.Set(ctx, key, raw, redis.KeepTTL).Err(); err != nil {
			t.Fatal(err)
		}
		return key
	}
	return ""
}

func TestPlantedRecordOfAnotherIdentityIsNotInjected(t *testing.T) {
	tests := []struct {
		name string
		// planted returns a token of another identity, fetched from f's
		// emulator or another.
		planted func(t *testing.T, f *fleet) string
		claim   string
	}{
		{"another tenant", func(t *testing.T, f *fleet) string {
			// The same client ID registered in another tenant.
			other, server, err := entratest.NewServer(entratest.Options{TenantID: otherTenantID})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(server.Close)
			other.AddClient(testClientID, testClientSecret)
			return foreignToken(t, server.URL, otherTenantID, testClientID, testClientSecret)
		}, "tid"},
		{"another client", func(t *testing.T, f *fleet) string {
			f.emulator.AddClient(otherClientID, otherSecret)
			return foreignToken(t, f.issuer, f.emulator.TenantID(), otherClientID, otherSecret)
		}, "appid"},
		{"the same identity's token for another resource", func(t *testing.T, f *fleet) string {
			return foreignTokenFor(t, f.issuer, f.emulator.TenantID(), testClientID, testClientSecret, "api://billing/.default")
		}, "aud"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFleet(t)
			first := f.startReplica(t)
			own := tokenVia(t, first, f.upstream, "/orders/a")
			planted := tt.planted(t, f)
			key := f.plantToken(t, planted)
			requests := f.emulator.TokenRequests()

			second := f.startReplica(t)
			got := tokenVia(t, second, f.upstream, "/orders/b")
			if got == planted {
				t.Fatal("the replica injected the planted token of another identity")
			}
			claims, err := f.emulator.Verify(got)
			if err != nil || claims.TenantID != f.emulator.TenantID() || claims.AppID != testClientID {
				t.Fatalf("injected token: %+v, %v; want one of the configured tenant and client", claims, err)
			}
			if n := f.emulator.TokenRequests() - requests; n != 1 {
				t.Errorf("%d token requests after the planting, want 1: the replica fetches its own", n)
			}
			logs := second.logs()
			if n := strings.Count(logs, tamperingWarning); n != 1 {
				t.Errorf("the replica logged %d tampering warnings, want 1\n%s", n, logs)
			}
			for _, line := range strings.Split(logs, "\n") {
				if strings.Contains(line, tamperingWarning) && (!strings.Contains(line, key) || !strings.Contains(line, "claim "+tt.claim)) {
					t.Errorf("the tampering warning does not name the record key and the %s claim: %s", tt.claim, line)
				}
			}
			if record := f.records(t)[key]; record["accessToken"] != got {
				t.Error("the planted record was not replaced with the replica's own token")
			}
			assertNoSecrets(t, first.logs()+logs, planted, own, got)
			assertNoSecretsIn(t, first.logs()+logs, otherSecret)
		})
	}
}

func TestOpaqueTokensAreSharedOnlyWithEncryptionKey(t *testing.T) {
	const cannotShare = "set encryption_key to share them"
	t.Run("without encryption_key", func(t *testing.T) {
		f := newFleet(t)
		f.emulator.SetTokenFormat(entratest.TokenOpaque)
		first, second := f.startReplica(t), f.startReplica(t)
		a := tokenVia(t, first, f.upstream, "/orders/a")
		b := tokenVia(t, second, f.upstream, "/orders/b")
		if a == b {
			t.Error("replicas shared an opaque token through redis without encryption_key")
		}
		if got := f.emulator.TokenRequests(); got != 2 {
			t.Errorf("token requests = %d, want 2 (one per replica)", got)
		}
		if n := len(f.records(t)); n != 0 {
			t.Errorf("redis holds %d records, want none", n)
		}
		tokenVia(t, first, f.upstream, "/orders/c")
		for name, replica := range map[string]*sidecar{"first": first, "second": second} {
			if n := strings.Count(replica.logs(), cannotShare); n != 1 {
				t.Errorf("the %s replica said %d times why it cannot share, want once", name, n)
			}
		}
		assertNoSecrets(t, first.logs()+second.logs(), a, b)
	})
	t.Run("with encryption_key", func(t *testing.T) {
		f := newFleet(t)
		f.emulator.SetTokenFormat(entratest.TokenOpaque)
		raw := make([]byte, 32)
		_, _ = rand.Read(raw)
		env := append(f.env(testClientSecret), "TEST_KEY="+base64.StdEncoding.EncodeToString(raw))
		config := fleetConfig("encryption_key {env.TEST_KEY}", "")
		first, second := startSidecar(t, config, env...), startSidecar(t, config, env...)
		a := tokenVia(t, first, f.upstream, "/orders/a")
		if b := tokenVia(t, second, f.upstream, "/orders/b"); b != a {
			t.Error("replicas with encryption_key did not share the opaque token")
		}
		if got := f.emulator.TokenRequests(); got != 1 {
			t.Errorf("token requests = %d, want 1", got)
		}
		if logs := first.logs() + second.logs(); strings.Contains(logs, cannotShare) {
			t.Error("a replica with encryption_key said it cannot share")
		}
	})
}

func TestManagedIdentityReplicaDoesNotInjectAPlantedRecord(t *testing.T) {
	f := newFleet(t)
	const systemID = "44444444-0000-4000-8000-00000000005a"
	f.emulator.AddManagedIdentity(systemID, true)
	config := sidecarConfig(`
		redis {env.TEST_REDIS_URL} {
			key_prefix `+testKeyPrefix+`
			insecure_plaintext
		}
		application vault https://vault.azure.net/.default {
			managed_identity {
				endpoint {env.TEST_IMDS}
			}
		}`, route{Path: "/vault", Application: "vault"})
	env := append(f.env(testClientSecret), "TEST_IMDS="+f.issuer+entratest.IMDSPath)
	first := startSidecar(t, config, env...)
	tokenVia(t, first, f.upstream, "/vault/a")

	// Another tenant's token for the same system-assigned client ID.
	other, server, err := entratest.NewServer(entratest.Options{TenantID: otherTenantID})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(server.Close)
	other.AddManagedIdentity(systemID, true)
	c, err := entra.NewClient(entra.Config{ManagedIdentity: &entra.ManagedIdentityCredential{IMDSEndpoint: server.URL + entratest.IMDSPath}})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := c.Token(context.Background(), []string{"https://vault.azure.net/.default"})
	if err != nil {
		t.Fatal(err)
	}
	f.plantToken(t, tok.AccessToken)

	// A new replica has not learned its managed identity's tenant yet: it
	// trusts no record it cannot authenticate, and fetches its own.
	second := startSidecar(t, config, env...)
	got := tokenVia(t, second, f.upstream, "/vault/b")
	if got == tok.AccessToken {
		t.Fatal("the managed identity replica injected the planted token")
	}
	if claims, err := f.emulator.Verify(got); err != nil || claims.TenantID != f.emulator.TenantID() || claims.AppID != systemID {
		t.Fatalf("injected token: %+v, %v", claims, err)
	}
	if got := f.emulator.TokenRequests(); got != 2 {
		t.Errorf("token requests = %d, want 2", got)
	}
	assertNoSecrets(t, first.logs()+second.logs(), tok.AccessToken, got)
}
