package integration

import (
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/entra/entratest"
)

// TestALargeClaimsChallengeIsPassedOnNotHeld: downstream answers a claims
// challenge with a body far beyond what the sidecar holds back to answer
// it (64 KiB). The body reaches the client while downstream still writes
// it (downstream waits until the client has read its first 128 KiB), the
// request is not sent again, and the token is still replaced.
func TestALargeClaimsChallengeIsPassedOnNotHeld(t *testing.T) {
	const head, tail = 128 << 10, 1 << 20
	f := newFleet(t)
	var mu sync.Mutex
	var withClaims []string
	f.emulator.OnIssue(func(i entratest.Issued) {
		mu.Lock()
		defer mu.Unlock()
		if strings.Contains(i.Claims, `"nbf"`) {
			withClaims = append(withClaims, i.AccessToken)
		}
	})
	var challenged, held atomic.Int32
	clientRead := make(chan struct{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		mu.Lock()
		fresh := len(withClaims) > 0 && token == withClaims[len(withClaims)-1]
		mu.Unlock()
		if fresh {
			io.WriteString(w, entra.Fingerprint(token))
			return
		}
		if challenged.Add(1) > 1 {
			w.WriteHeader(http.StatusConflict) // sent again with the old token
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer error="insufficient_claims", claims="`+
			base64.StdEncoding.EncodeToString([]byte(downstreamChallenge))+`"`)
		w.WriteHeader(http.StatusUnauthorized)
		w.Write(make([]byte, head))
		http.NewResponseController(w).Flush()
		select {
		case <-clientRead:
		case <-time.After(10 * time.Second):
			held.Store(1) // the sidecar held the body back
		}
		w.Write(make([]byte, tail))
	}))
	t.Cleanup(upstream.Close)
	config := sidecarConfig(testIdentity+`
		client_capabilities cp1
		application orders-api api://orders/.default`,
		route{Path: "/orders", Application: "orders-api"})
	a := startSidecar(t, config, append(f.env(testClientSecret), "TEST_UPSTREAM="+upstream.URL)...)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, a.URL+"/orders/x", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "insufficient_claims") {
		t.Fatalf("got %d %q, want the challenge passed on", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, head)); err != nil {
		t.Fatalf("reading the challenge's first %d bytes: %v", head, err)
	}
	close(clientRead)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || len(rest) != tail {
		t.Fatalf("rest of the challenge: %d bytes, %v; want %d", len(rest), err, tail)
	}
	if held.Load() != 0 {
		t.Error("the sidecar held the challenge's body until downstream had written it all")
	}
	if n := challenged.Load(); n != 1 {
		t.Errorf("downstream got %d requests with the old token, want 1 (not sent again)", n)
	}
	mu.Lock()
	n, last := len(withClaims), ""
	if n > 0 {
		last = withClaims[n-1]
	}
	mu.Unlock()
	if n != 1 {
		t.Fatalf("%d token requests with the challenge's claims, want 1\n%s", n, a.logs())
	}
	if got := send(t, a.URL+"/orders/x", nil); got.Status != http.StatusOK || got.Body != entra.Fingerprint(last) {
		t.Errorf("the next request: %d %q, want 200 with the replaced token", got.Status, got.Body)
	}
}
