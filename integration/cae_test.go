package integration

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/entra/entratest"
)

// caeUpstream answers 401 with an insufficient_claims challenge to the
// tokens it was told were revoked (as Graph does under continuous access
// evaluation), and 200 with the token's fingerprint to others.
type caeUpstream struct {
	server  *httptest.Server
	mu      sync.Mutex
	revoked map[string]bool
	bodies  []string // the bodies of the requests it answered 200
}

const downstreamChallenge = `{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}`

func newCAEUpstream(t *testing.T) *caeUpstream {
	u := &caeUpstream{revoked: map[string]bool{}}
	u.server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		u.mu.Lock()
		revoked := u.revoked[token]
		u.mu.Unlock()
		if revoked {
			w.Header().Set("WWW-Authenticate", `Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", `+
				`error="insufficient_claims", claims="`+base64.StdEncoding.EncodeToString([]byte(downstreamChallenge))+`"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, entra.Fingerprint(token))
	}))
	t.Cleanup(u.server.Close)
	return u
}

func (u *caeUpstream) revoke(token string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.revoked[token] = true
}

// TestClaimsChallengeFromDownstreamReplacesTheToken: two replicas sharing
// Redis, an application with client_capabilities cp1. Downstream revokes
// the token with a claims challenge: replica A requests a new token with
// the challenge's claims (merged with xms_cc) and sends its bodiless
// request again, which succeeds; replica B takes the new token from the
// announcement (one token request with claims for the fleet). A request
// with a body gets the challenge itself, and the next request the new
// token.
func TestClaimsChallengeFromDownstreamReplacesTheToken(t *testing.T) {
	f := newFleet(t)
	var mu sync.Mutex
	var issued []entratest.Issued
	f.emulator.OnIssue(func(i entratest.Issued) {
		mu.Lock()
		defer mu.Unlock()
		issued = append(issued, i)
	})
	withClaims := func() (n int, last string) {
		mu.Lock()
		defer mu.Unlock()
		for _, i := range issued {
			if strings.Contains(i.Claims, `"nbf"`) {
				n, last = n+1, i.AccessToken
			}
		}
		return n, last
	}
	up := newCAEUpstream(t)
	config := sidecarConfig(testIdentity+`
		client_capabilities cp1
		redis {env.TEST_REDIS_URL} {
			key_prefix `+testKeyPrefix+`
			insecure_plaintext
		}
		application orders-api api://orders/.default`,
		route{Path: "/orders", Application: "orders-api"})
	env := append(f.env(testClientSecret), "TEST_UPSTREAM="+up.server.URL)
	a, b := startSidecar(t, config, env...), startSidecar(t, config, env...)

	first := send(t, a.URL+"/orders/x", nil)
	if first.Status != http.StatusOK {
		t.Fatalf("first request: %d %s", first.Status, first.Body)
	}
	if got := send(t, b.URL+"/orders/x", nil); got.Body != first.Body {
		t.Fatalf("B injects another token than A: %s", got.Body)
	}
	mu.Lock()
	t1 := issued[len(issued)-1].AccessToken
	mu.Unlock()
	up.revoke(t1)

	// A: the challenge, a token request with its claims, the request sent again.
	got := send(t, a.URL+"/orders/x", nil)
	n, t2 := withClaims()
	if got.Status != http.StatusOK || got.Body != entra.Fingerprint(t2) || n != 1 {
		t.Fatalf("after the challenge: %d %q, %d token requests with the claims (want 200 with the new token, 1)\n%s", got.Status, got.Body, n, a.logs())
	}
	// The request carried the claims merged with the capability.
	mu.Lock()
	var claims map[string]map[string]any
	for _, i := range issued {
		if i.AccessToken == t2 {
			_ = json.Unmarshal([]byte(i.Claims), &claims)
		}
	}
	mu.Unlock()
	if claims["access_token"]["nbf"] == nil || claims["access_token"]["xms_cc"] == nil {
		t.Errorf("the token request's claims %v lack the challenge's nbf or xms_cc", claims)
	}

	// B: the new token came with the announcement; no token request of its own.
	waitFor(t, "replica B holding the new token", 5*time.Second, func() error {
		status, body := get(t, b.AdminURL+"/entra/tokens/orders-api", nil)
		if status != http.StatusOK || !strings.Contains(body, entra.Fingerprint(t2)) {
			return fmt.Errorf("%d %s", status, body)
		}
		return nil
	})
	if got := send(t, b.URL+"/orders/x", nil); got.Status != http.StatusOK || got.Body != entra.Fingerprint(t2) {
		t.Fatalf("B after A's refresh: %d %q", got.Status, got.Body)
	}
	if n, _ := withClaims(); n != 1 {
		t.Errorf("%d token requests with the claims for 2 replicas, want 1", n)
	}

	// A request with a body is not sent twice: its client gets the challenge,
	// and the token is replaced (forced refreshes within a second of the
	// last share its result, so the first such requests may find T2 again).
	up.revoke(t2)
	waitFor(t, "a token request with the second challenge's claims", 5*time.Second, func() error {
		resp, err := http.Post(a.URL+"/orders/x", "text/plain", strings.NewReader("a body"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "insufficient_claims") {
			t.Fatalf("request with a body: %d %q, want the challenge", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
		if n, _ := withClaims(); n != 2 {
			return fmt.Errorf("%d token requests with the claims", n)
		}
		return nil
	})
	_, t3 := withClaims()
	if got := send(t, a.URL+"/orders/x", nil); got.Status != http.StatusOK || got.Body != entra.Fingerprint(t3) {
		t.Errorf("the next request: %d %q, want 200 with the new token", got.Status, got.Body)
	}
	assertNoSecrets(t, a.logs()+b.logs(), t1, t2, t3)
}

// TestRefusedClaimsChallengePausesNothingFleetWide: two replicas sharing
// Redis (sealed records), an application with client_capabilities cp1.
// The endpoint refuses the token request made for a downstream's claims
// challenge (400 invalid_request): the client gets the challenge, and
// nothing is paused. Redis holds no backoff, the other replica's admin
// refresh gets a new token at once, and both replicas inject it.
func TestRefusedClaimsChallengePausesNothingFleetWide(t *testing.T) {
	f := newFleet(t)
	up := newCAEUpstream(t)
	config := sidecarConfig(testIdentity+`
		client_capabilities cp1
		redis {env.TEST_REDIS_URL} {
			key_prefix `+testKeyPrefix+`
			encryption_key MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=
		}
		application orders-api api://orders/.default`,
		route{Path: "/orders", Application: "orders-api"})
	env := append(f.env(testClientSecret), "TEST_UPSTREAM="+up.server.URL)
	a, b := startSidecar(t, config, env...), startSidecar(t, config, env...)

	var issued []string
	var mu sync.Mutex
	f.emulator.OnIssue(func(i entratest.Issued) {
		mu.Lock()
		defer mu.Unlock()
		issued = append(issued, i.AccessToken)
	})
	last := func() string {
		mu.Lock()
		defer mu.Unlock()
		return issued[len(issued)-1]
	}

	first := send(t, a.URL+"/orders/x", nil)
	if first.Status != http.StatusOK {
		t.Fatalf("first request: %d %s", first.Status, first.Body)
	}
	if got := send(t, b.URL+"/orders/x", nil); got.Body != first.Body {
		t.Fatalf("B injects another token than A: %s", got.Body)
	}
	up.revoke(last())

	f.emulator.FailNext(1, entratest.Failure{Status: http.StatusBadRequest, Error: "invalid_request", Description: "The claims are not valid."})
	got := send(t, a.URL+"/orders/x", nil)
	if got.Status != http.StatusUnauthorized || !strings.Contains(got.Header.Get("WWW-Authenticate"), "insufficient_claims") || f.emulator.TokenRequests() != 2 {
		t.Fatalf("refused claims challenge: %d %q after %d token requests, want the challenge after 2\n%s",
			got.Status, got.Header.Get("WWW-Authenticate"), f.emulator.TokenRequests(), a.logs())
	}
	keys, err := f.rdb.Keys(t.Context(), testKeyPrefix+"*:backoff").Result()
	if err != nil || len(keys) != 0 {
		t.Errorf("Redis backoffs after a refused claims challenge: %v %v, want none", keys, err)
	}
	if status, body := get(t, a.AdminURL+"/entra/tokens/orders-api", nil); status != http.StatusOK || strings.Contains(body, `"backoff"`) {
		t.Errorf("admin status on A: %d %s, want no backoff", status, body)
	}

	// Replica B's admin refresh is not paused: a new token for the fleet.
	resp, err := http.Post(b.AdminURL+"/entra/tokens/orders-api/refresh", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || f.emulator.TokenRequests() != 3 {
		t.Fatalf("admin refresh on B: %d after %d token requests, want 200 after 3\n%s", resp.StatusCode, f.emulator.TokenRequests(), b.logs())
	}
	second := entra.Fingerprint(last())
	waitFor(t, "replica A injecting B's new token", 5*time.Second, func() error {
		if got := send(t, a.URL+"/orders/x", nil); got.Status != http.StatusOK || got.Body != second {
			return fmt.Errorf("%d %q", got.Status, got.Body)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	assertNoSecrets(t, a.logs()+b.logs(), issued...)
}
