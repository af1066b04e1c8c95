package integration

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// upstream is the downstream API the sidecar forwards to. It records the
// headers of every request it receives, and answers 401 to tokens it has been
// told to refuse (as an API does with a revoked token).
type upstream struct {
	server  *httptest.Server
	mu      sync.Mutex
	seen    [][]string
	headers []http.Header
	refused map[string]bool
}

// newUpstream starts an upstream on loopback; it answers each request with the
// Authorization headers it received, as JSON.
func newUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{refused: make(map[string]bool)}
	u.server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		values := r.Header.Values("Authorization")
		u.mu.Lock()
		u.seen = append(u.seen, values)
		u.headers = append(u.headers, r.Header.Clone())
		refuse := len(values) == 1 && u.refused[strings.TrimPrefix(values[0], "Bearer ")]
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if refuse {
			w.WriteHeader(http.StatusUnauthorized)
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"path": r.URL.Path, "authorization": values})
	}))
	t.Cleanup(u.server.Close)
	return u
}

// refuse makes the upstream answer 401 to token from now on.
func (u *upstream) refuse(token string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.refused[token] = true
}

// requests returns the Authorization values of each request received so far.
func (u *upstream) requests() [][]string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([][]string(nil), u.seen...)
}

// lastHeaders returns the headers of the last request received.
func (u *upstream) lastHeaders() http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.headers) == 0 {
		return nil
	}
	return u.headers[len(u.headers)-1]
}

// allHeaders returns the headers of every request received so far.
func (u *upstream) allHeaders() []http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]http.Header(nil), u.headers...)
}
