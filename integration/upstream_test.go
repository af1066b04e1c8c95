package integration

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// upstream is the downstream API the sidecar forwards to. It records the
// Authorization headers of every request it receives.
type upstream struct {
	server *httptest.Server
	mu     sync.Mutex
	seen   [][]string
}

// newUpstream starts an upstream on loopback; it answers each request with the
// Authorization headers it received, as JSON.
func newUpstream(t *testing.T) *upstream {
	t.Helper()
	u := new(upstream)
	u.server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		values := r.Header.Values("Authorization")
		u.mu.Lock()
		u.seen = append(u.seen, values)
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"path": r.URL.Path, "authorization": values})
	}))
	t.Cleanup(u.server.Close)
	return u
}

// requests returns the Authorization values of each request received so far.
func (u *upstream) requests() [][]string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([][]string(nil), u.seen...)
}
