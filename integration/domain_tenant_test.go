package integration

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// Five cold replicas whose tenant_id is a domain name, sharing a real
// redis-server, make one token request for the fleet under a burst of
// requests, with encryption_key (sealed records are authenticated, and no
// name is resolved) and without it (insecure_plaintext: each replica
// resolves the name to the tenant ID once, through the tenant's OpenID
// configuration, and so trusts the record another replica stored before
// it has a token of its own).
func TestDomainTenantFleetMakesOneTokenRequest(t *testing.T) {
	const replicas, perReplica = 5, 200
	for _, tc := range []struct {
		name, redisOptions string
		maxDiscovery       int64
	}{
		{"insecure_plaintext", "", replicas},
		{"encryption_key", "encryption_key {env.TEST_KEY}", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFleet(t)
			const domain = "contoso.onmicrosoft.com"
			if err := f.emulator.AddDomain(domain, f.emulator.TenantID()); err != nil {
				t.Fatal(err)
			}
			key := make([]byte, 32)
			_, _ = rand.Read(key)
			env := append(f.env(testClientSecret), "TEST_TENANT_ID="+domain, "TEST_KEY="+base64.StdEncoding.EncodeToString(key))
			config := fleetConfig(tc.redisOptions, "")
			var fleet []*sidecar
			for range replicas {
				fleet = append(fleet, startSidecar(t, config, env...))
			}

			var wg sync.WaitGroup
			counts := make([]map[int]int, replicas)
			for i, replica := range fleet {
				wg.Go(func() { counts[i] = hammer(t, replica.URL+"/orders/x", perReplica) })
			}
			wg.Wait()
			for i, statuses := range counts {
				if statuses[http.StatusOK] != perReplica {
					t.Errorf("replica %d: statuses %v, want %d x 200\n%s", i, statuses, perReplica, fleet[i].logs())
				}
			}
			tokens := map[string]bool{}
			for _, values := range f.upstream.requests() {
				tokens[bearer(t, values)] = true
			}
			if len(tokens) != 1 {
				t.Errorf("the upstream saw %d distinct tokens, want the fleet's one", len(tokens))
			}
			t.Logf("%d cold replicas x %d requests, tenant %s: %d token request(s), %d OpenID configuration request(s)",
				replicas, perReplica, domain, f.emulator.TokenRequests(), f.emulator.DiscoveryRequests())
			if n := f.emulator.TokenRequests(); n != 1 {
				var logs strings.Builder
				for i, replica := range fleet {
					fmt.Fprintf(&logs, "replica %d:\n%s\n", i, replica.logs())
				}
				t.Errorf("token requests = %d, want 1 for the fleet\n%s", n, logs.String())
			}
			if n := f.emulator.DiscoveryRequests(); n > tc.maxDiscovery {
				t.Errorf("OpenID configuration requests = %d, want at most %d (once per process)", n, tc.maxDiscovery)
			}
			for _, replica := range fleet {
				assertNoSecrets(t, replica.logs())
			}
		})
	}
}
