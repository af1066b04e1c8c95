package integration

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestTwoHostsSystemIdentitiesNeverShareARecord: two hosts whose
// system-assigned managed identities differ, reached at the same managed
// identity endpoint (as 169.254.169.254 is on every VM) and sharing one
// Redis, key_prefix and encryption_key, never inject each other's token:
// a system-assigned identity's records are keyed by the identity its own
// first token names.
func TestTwoHostsSystemIdentitiesNeverShareARecord(t *testing.T) {
	f := newFleet(t)
	const hostA, hostB = "77777777-0000-4000-8000-0000000000a1", "88888888-0000-4000-8000-0000000000b2"
	config, env := systemIdentityHostConfig(f)

	f.emulator.AddManagedIdentity(hostA, true)
	a := startSidecar(t, config, env...)
	tokenA := tokenVia(t, a, f.upstream, "/vault/x")
	if claims, err := f.emulator.Verify(tokenA); err != nil || claims.AppID != hostA {
		t.Fatalf("host A's token: %+v, %v", claims, err)
	}
	// Host A keys its records by the identity its first token named, and
	// takes its token under that key.
	waitFor(t, "host A's rekey", 5*time.Second, func() error {
		if !strings.Contains(a.logs(), "system-assigned managed identity learned from its first token") {
			return errors.New("not yet")
		}
		return nil
	})
	tokenA = tokenVia(t, a, f.upstream, "/vault/x")
	if keys, err := f.rdb.Keys(t.Context(), testKeyPrefix+"*:token").Result(); err != nil || len(keys) == 0 {
		t.Fatalf("host A wrote no record (%v)", err)
	}
	requests := f.emulator.TokenRequests()

	// The same endpoint now answers for host B's system identity.
	f.emulator.AddManagedIdentity(hostB, true)
	b := startSidecar(t, config, env...)
	for i := range 3 {
		tokenB := tokenVia(t, b, f.upstream, "/vault/y")
		if tokenB == tokenA {
			t.Fatalf("request %d: host B injected host A's token", i)
		}
		if claims, err := f.emulator.Verify(tokenB); err != nil || claims.AppID != hostB {
			t.Fatalf("request %d: host B's token: %+v, %v", i, claims, err)
		}
	}
	if got := tokenVia(t, a, f.upstream, "/vault/z"); got != tokenA {
		t.Error("host A's cached token changed")
	}
	// Host B: one token request before it knows its identity, one under
	// its identity's key (the records of host A's identity are not its).
	if n := f.emulator.TokenRequests() - requests; n > 2 {
		t.Errorf("host B made %d token requests, want at most 2", n)
	}
	// The rekey runs in a goroutine of its own after the first fetch: wait
	// for its line as for host A's.
	waitFor(t, "host B's rekey (it did not key its records by its learned identity)", 5*time.Second, func() error {
		if !strings.Contains(b.logs(), "system-assigned managed identity learned from its first token") {
			return errors.New("not yet")
		}
		return nil
	})
}

// TestTwoHostsWhoseTokensNameNoClientNeverShareARecord: as above, behind an
// IMDS-compatible endpoint whose tokens leave the client claim out. Such an
// identity cannot be told apart by its tokens, so each host keeps its
// per-process record key and shares nothing: host B never carries host A's
// token, however often it asks.
func TestTwoHostsWhoseTokensNameNoClientNeverShareARecord(t *testing.T) {
	f := newFleet(t)
	f.emulator.SetOmitClientClaims(true)
	const hostA, hostB = "77777777-0000-4000-8000-0000000000c1", "88888888-0000-4000-8000-0000000000c2"
	config, env := systemIdentityHostConfig(f)

	idA := f.emulator.AddManagedIdentity(hostA, true)
	a := startSidecar(t, config, env...)
	tokenA := tokenVia(t, a, f.upstream, "/vault/x")
	if claims, err := f.emulator.Verify(tokenA); err != nil || claims.ObjectID != idA.ObjectID || claims.AppID != "" || claims.AuthorizedParty != "" {
		t.Fatalf("host A's token: %+v, %v; want host A's, without a client claim", claims, err)
	}
	if got := tokenVia(t, a, f.upstream, "/vault/x"); got != tokenA {
		t.Error("host A did not cache its token")
	}

	idB := f.emulator.AddManagedIdentity(hostB, true)
	b := startSidecar(t, config, env...)
	for i := range 3 {
		tokenB := tokenVia(t, b, f.upstream, "/vault/y")
		if tokenB == tokenA {
			t.Fatalf("request %d: host B injected host A's token", i)
		}
		if claims, err := f.emulator.Verify(tokenB); err != nil || claims.ObjectID != idB.ObjectID {
			t.Fatalf("request %d: host B's token: %+v, %v", i, claims, err)
		}
	}
	for name, s := range map[string]*sidecar{"A": a, "B": b} {
		// The warning comes through the replica's stderr pipe: wait for it
		// before counting.
		waitFor(t, "host "+name+"'s warning that its identity cannot be learned", 5*time.Second, func() error {
			if !strings.Contains(s.logs(), "do not name its tenant and client") {
				return errors.New("not yet")
			}
			return nil
		})
		logs := s.logs()
		if strings.Contains(logs, "system-assigned managed identity learned from its first token") {
			t.Errorf("host %s keyed its records by tokens that name no client", name)
		}
		if n := strings.Count(logs, "do not name its tenant and client"); n != 1 {
			t.Errorf("host %s said %d times that its identity cannot be learned, want once", name, n)
		}
	}
}

// systemIdentityHostConfig is the config and environment of a host whose
// vault application uses the emulator's IMDS endpoint as its system-assigned
// identity, sharing the fleet's Redis, key_prefix and a new encryption_key.
func systemIdentityHostConfig(f *fleet) (config string, env []string) {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	config = sidecarConfig(`
		redis {env.TEST_REDIS_URL} {
			key_prefix `+testKeyPrefix+`
			encryption_key {env.TEST_KEY}
		}
		application vault https://vault.azure.net/.default {
			managed_identity {
				endpoint {env.TEST_IMDS}
			}
		}`,
		route{Path: "/vault", Application: "vault"})
	env = append(f.env(testClientSecret), "TEST_IMDS="+f.issuer+"/metadata/identity/oauth2/token",
		"TEST_KEY="+base64.StdEncoding.EncodeToString(key))
	return config, env
}
