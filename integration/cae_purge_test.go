package integration

import (
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/entra/entratest"
)

// TestRefusalsAroundAClaimsChallengePurge: with client_capabilities, what
// the sidecar cannot answer as a claims challenge still purges as
// purge_on_status says: a challenge whose claims it cannot read, and a
// plain 401 to the request sent again with the new token. The next
// request gets a token of a new request.
func TestRefusalsAroundAClaimsChallengePurge(t *testing.T) {
	readable := `Bearer error="insufficient_claims", claims="` + base64.StdEncoding.EncodeToString([]byte(downstreamChallenge)) + `"`
	for name, refuse := range map[string]func(w http.ResponseWriter, first bool){
		// The first token meets a challenge without readable claims.
		"unreadable challenge": func(w http.ResponseWriter, first bool) {
			if first {
				w.Header().Set("WWW-Authenticate", `Bearer error="insufficient_claims", claims="%%%"`)
				w.WriteHeader(http.StatusUnauthorized)
			}
		},
		// The first token meets a challenge; the token with its claims a 401.
		"refused retry": func(w http.ResponseWriter, first bool) {
			if first {
				w.Header().Set("WWW-Authenticate", readable)
			} else {
				w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			}
			w.WriteHeader(http.StatusUnauthorized)
		},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFleet(t)
			var mu sync.Mutex
			var issued []string
			f.emulator.OnIssue(func(i entratest.Issued) {
				mu.Lock()
				defer mu.Unlock()
				issued = append(issued, i.AccessToken)
			})
			refusing := map[string]bool{} // tokens refused so far, by whether it was the first
			upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
				mu.Lock()
				first, refuseIt := token == issued[0], len(issued) <= 2
				mu.Unlock()
				if refuseIt && !refusing[token] {
					refusing[token] = true
					refuse(w, first)
					if w.Header().Get("WWW-Authenticate") != "" {
						return
					}
				}
				io.WriteString(w, entra.Fingerprint(token))
			}))
			t.Cleanup(upstream.Close)
			config := sidecarConfig(testIdentity+`
				client_capabilities cp1
				application orders-api api://orders/.default`,
				route{Path: "/orders", Application: "orders-api"})
			a := startSidecar(t, config, append(f.env(testClientSecret), "TEST_UPSTREAM="+upstream.URL)...)

			if got := send(t, a.URL+"/orders/x", nil); got.Status != http.StatusUnauthorized {
				t.Fatalf("first request: %d %q, want the refusal passed on", got.Status, got.Body)
			}
			mu.Lock()
			before := len(issued)
			mu.Unlock()
			got := send(t, a.URL+"/orders/x", nil)
			mu.Lock()
			after, last := len(issued), issued[len(issued)-1]
			mu.Unlock()
			if got.Status != http.StatusOK || after != before+1 || got.Body != entra.Fingerprint(last) {
				t.Errorf("the next request: %d, %d new token requests, want 200 with the token of one new request\n%s",
					got.Status, after-before, a.logs())
			}
		})
	}
}
