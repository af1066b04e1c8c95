package integration

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

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
// token, and its expiry with the token's exp when it is a JWT (a plausible
// record, which passes the token checks), keeping everything else, as
// anyone who can write to Redis can. It returns the record key.
func (f *fleet) plantToken(t *testing.T, token string) string {
	t.Helper()
	ctx := context.Background()
	records := f.records(t)
	if len(records) != 1 {
		t.Fatalf("redis holds %d records, want 1", len(records))
	}
	for key, record := range records {
		record["accessToken"] = token
		if exp, ok := jwtExp(token); ok {
			record["accessTokenExpiresAt"] = exp.UTC().Format(time.RFC3339)
		}
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

// jwtExp reads a JWT's exp claim without verifying it.
func jwtExp(token string) (time.Time, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp int64 `json:"exp"`
	}
	if json.Unmarshal(raw, &claims) != nil || claims.Exp == 0 {
		return time.Time{}, false
	}
	return time.Unix(claims.Exp, 0), true
}

// forgedToken is what a writer of a plaintext Redis can make without any
// key: a JWT with header and signature as given and the claims of the
// sidecar's own tokens (tenant, client, resource), expiring at exp.
// Signature checks aside (which the sidecar cannot make for Entra's
// tokens), it looks like one.
func forgedToken(header, signature, tenant string, exp time.Time) string {
	enc := base64.RawURLEncoding
	payload, _ := json.Marshal(map[string]any{
		"aud": "api://orders", "iss": "https://sts.windows.net/" + tenant + "/",
		"tid": tenant, "appid": testClientID, "azp": testClientID, "idtyp": "app", "ver": "1.0",
		"iat": time.Now().Unix(), "nbf": time.Now().Unix(), "exp": exp.Unix(),
		"jti": "forged-Do-Not-Log-6f1e",
	})
	return enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString(payload) + "." + signature
}

// TestForgedUnsignedRecordIsNeitherInjectedNorHandedOut reproduces issue
// 15's attack on two replicas sharing a real redis-server with
// insecure_plaintext: a record holding a forged alg-none JWT with the right
// tid, appid and aud and an exp 7 days away, plus one message on the key's
// channel. Neither replica injects it (not the one that had its own token,
// not the one that starts after), the record endpoint never hands it out,
// and each replica logs the record as possible tampering. So it goes for
// a JWT that claims RS256 with a signature nobody checks but lives 7 days,
// longer than any token the replicas have had (the lifetime bound).
func TestForgedUnsignedRecordIsNeitherInjectedNorHandedOut(t *testing.T) {
	exp := time.Now().Add(7 * 24 * time.Hour).Truncate(time.Second)
	for _, tc := range []struct{ name, header, signature string }{
		{"alg none", `{"alg":"none","typ":"JWT"}`, ""},
		{"RS256, 7 days", `{"alg":"RS256","typ":"JWT","kid":"forged"}`, "Zm9yZ2VkLXNpZ25hdHVyZQ"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forgedRecordIsRefused(t, tc.header, tc.signature, exp)
		})
	}
}

// forgedRecordIsRefused plants a forged token with header and signature,
// expiring at exp, as the record of two replicas' application and
// announces it; neither takes it.
func forgedRecordIsRefused(t *testing.T, header, signature string, exp time.Time) {
	f := newFleet(t)
	env := append(f.env(testClientSecret), "TEST_IDENTITY_HEADER="+testIdentityHeader)
	secret := http.Header{"X-Identity-Header": {testIdentityHeader}}
	a := startSidecar(t, endpointCaddyfile, env...)
	own := tokenVia(t, a, f.upstream, "/orders/a")

	forged := forgedToken(header, signature, f.emulator.TenantID(), exp)
	records := f.records(t)
	if len(records) != 1 {
		t.Fatalf("redis holds %d records, want 1", len(records))
	}
	for key, record := range records {
		record["accessToken"] = forged
		record["accessTokenExpiresAt"] = exp.UTC().Format(time.RFC3339)
		// Written after the replica's own record (RFC 3339 drops the
		// fraction of a second), as a writer wanting it taken would.
		record["updatedAt"] = time.Now().Add(2 * time.Second).UTC().Format(time.RFC3339)
		raw, err := json.Marshal(record)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if err := f.rdb.Set(ctx, key, raw, 7*24*time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
		if err := f.rdb.Publish(ctx, strings.TrimSuffix(key, ":token")+":updated", "").Err(); err != nil {
			t.Fatal(err)
		}
	}
	// Replica A reads the announced record: it refuses it (or, without the
	// token checks, takes it).
	waitFor(t, "replica A to read the announced record", 10*time.Second, func() error {
		if logs := a.logs(); !strings.Contains(logs, forgedWarning) && !strings.Contains(logs, "took a newer access token announced") {
			return errors.New("not yet")
		}
		return nil
	})
	if got := tokenVia(t, a, f.upstream, "/orders/b"); got == forged {
		t.Fatal("replica A injected the forged token")
	} else if got != own {
		t.Fatal("replica A no longer injects its own token")
	}
	if !strings.Contains(a.logs(), forgedWarning) {
		t.Error("replica A did not log the forged record as possible tampering")
	}

	b := startSidecar(t, endpointCaddyfile, env...)
	injected := tokenVia(t, b, f.upstream, "/orders/c")
	if injected == forged {
		t.Fatal("replica B injected the forged token")
	}
	if _, err := f.emulator.Verify(injected); err != nil {
		t.Fatalf("replica B injected a token the issuer did not sign: %v", err)
	}
	for name, s := range map[string]*sidecar{"A": a, "B": b} {
		resp := send(t, s.URL+"/token?applicationName=orders-api", secret)
		body := decode(t, resp.Body)
		if resp.Status != http.StatusOK || body["accessToken"] == forged {
			t.Fatalf("replica %s's record endpoint: status %d, handed out the forged token: %v", name, resp.Status, body["accessToken"] == forged)
		}
		if _, err := f.emulator.Verify(body["accessToken"].(string)); err != nil {
			t.Errorf("replica %s's record endpoint handed out a token the issuer did not sign: %v", name, err)
		}
		if exp, _ := time.Parse(time.RFC3339, body["accessTokenExpiresAt"].(string)); exp.After(time.Now().Add(2 * time.Hour)) {
			t.Errorf("replica %s's record expires at %v", name, exp)
		}
	}
	if !strings.Contains(b.logs(), forgedWarning) {
		t.Error("replica B did not log the forged record as possible tampering")
	}
	assertNoSecrets(t, a.logs()+b.logs(), own, injected)
	assertNoSecretsIn(t, a.logs()+b.logs(), forged) // its signature part is empty
}

// forgedWarning is what a replica logs when a record fails the token checks.
const forgedWarning = "ignoring a token record that fails the token checks; possible tampering"
