// Package integration runs the real sidecar end to end: the Caddy binary of
// cmd/caddy, a real redis-server on a free loopback port, and the entratest
// token endpoint.
package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/internal/testproc"
)

// caddyBinary is the path of the Caddy binary built by TestMain.
var caddyBinary string

func TestMain(m *testing.M) { testproc.RunWithCaddy(m, "..", &caddyBinary) }

// The child-process helpers are shared with the SDK tests (testproc).
var (
	freePort     = testproc.FreePort
	waitFor      = testproc.WaitFor
	startProcess = testproc.Start
)

type process = testproc.Process

// redisServer is a real redis-server on a free loopback port.
type redisServer struct {
	Addr string
	URL  string
	proc *process
}

// startRedis starts redis-server with no persistence. Without redis-server on
// PATH the test is skipped, except under CI=true, where it fails: CI installs it.
func startRedis(t *testing.T) *redisServer {
	t.Helper()
	addr, proc := testproc.StartRedis(t)
	return &redisServer{Addr: addr, URL: "redis://" + addr + "/0", proc: proc}
}

// sidecar is one Caddy replica running a Caddyfile.
type sidecar struct {
	URL      string // the site, http://127.0.0.1:port
	AdminURL string // Caddy's admin API, http://127.0.0.1:port
	proc     *process
}

// startSidecar writes caddyfile (with %[1]d for the HTTP port and %[2]d for
// the admin port) and runs the Caddy binary on it until the test ends.
func startSidecar(t *testing.T, caddyfileTemplate string, env ...string) *sidecar {
	t.Helper()
	port, adminPort := freePort(t), freePort(t)
	dir := t.TempDir()
	config := filepath.Join(dir, "Caddyfile")
	content := fmt.Sprintf(caddyfileTemplate, port, adminPort)
	if err := os.WriteFile(config, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	env = append(env, "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	proc := startProcess(t, env, caddyBinary, "run", "--config", config, "--adapter", "caddyfile")
	s := &sidecar{
		URL:      fmt.Sprintf("http://127.0.0.1:%d", port),
		AdminURL: fmt.Sprintf("http://127.0.0.1:%d", adminPort),
		proc:     proc,
	}
	if strings.Contains(content, "bind handoff/") {
		throughHandoff.Store(s.URL, true)
	}
	waitFor(t, "caddy on "+s.URL, 60*time.Second, func() error {
		if proc.Exited() {
			t.Fatalf("caddy exited:\n%s", proc.Output.String())
		}
		resp, err := http.Get(s.AdminURL + "/config/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
		if err != nil {
			return err
		}
		return conn.Close()
	})
	return s
}

// logs returns everything the replica has printed so far.
func (s *sidecar) logs() string { return s.proc.Output.String() }

// get sends a GET with the given headers and returns status and body.
func get(t *testing.T, url string, header http.Header) (int, string) {
	t.Helper()
	resp := send(t, url, header)
	return resp.Status, resp.Body
}

// response is what a client got.
type response struct {
	Status int
	Header http.Header
	Body   string
}

// throughHandoff holds the URLs of the sidecars that listen through
// `bind handoff/`, where no connection may be closed unanswered.
var throughHandoff sync.Map

// send sends a GET with the given headers and returns the response. To a
// sidecar on a plain bind, a connection closed unanswered is tried once
// more: right after a reload the kernel may queue a new connection on the
// old server's socket (Caddy listens with SO_REUSEPORT), which that server
// closes as it stops; `bind handoff/` exists to avoid that, so through it
// the failure stands.
func send(t *testing.T, url string, header http.Header) response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, values := range header {
		req.Header[name] = values
	}
	resp, err := http.DefaultClient.Do(req)
	if (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) && !viaHandoff(url) {
		t.Logf("GET %s: %v; sending it again", url, err)
		resp, err = http.DefaultClient.Do(req.Clone(ctx))
	}
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return response{Status: resp.StatusCode, Header: resp.Header, Body: string(body)}
}

// loadClient sends each request on a connection of its own: Caddy
// replaces its admin server at every load, and a POST on a connection kept
// from the server before can meet its close (EOF), which Go does not send
// again as it would a GET.
var loadClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// postLoad posts a Caddyfile to the admin API's /load, as a reload does
// (the same text loads again), and returns the answer's status and body.
func postLoad(adminURL, config string) (int, string, error) {
	req, err := http.NewRequest(http.MethodPost, adminURL+"/load", strings.NewReader(config))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "text/caddyfile")
	req.Header.Set("Cache-Control", "must-revalidate")
	resp, err := loadClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), nil
}

// viaHandoff reports whether url is of a sidecar that listens through
// `bind handoff/`.
func viaHandoff(url string) bool {
	found := false
	throughHandoff.Range(func(base, _ any) bool {
		found = url == base || strings.HasPrefix(url, base.(string)+"/")
		return !found
	})
	return found
}
