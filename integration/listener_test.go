//go:build linux

package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// listenerCaddyfile is a shipped-style sidecar: the proxy route and the
// token endpoint on one loopback site, listening as bind (%[1]d is the
// site port, %[2]d the admin port), with global (the handoff option or
// nothing).
func listenerCaddyfile(global, bind string) string {
	return `{
	admin 127.0.0.1:%[2]d
	` + global + `
	entra {
` + testIdentity + `
		application orders-api {
			scope ` + testScope + `
		}
	}
}

:%[1]d {
	bind ` + bind + `
	handle_path /orders/* {
		entra_token orders-api
		reverse_proxy {$TEST_UPSTREAM}
	}
	handle /token {
		entra_token_endpoint record {
			secret {env.TEST_IDENTITY_HEADER}
			application orders-api
		}
	}
}
`
}

// listenReusePort listens on address with SO_REUSEPORT set, as a process
// of the sidecar's user that wants a share of its connections would.
func listenReusePort(address string) (net.Listener, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var sockErr error
		if err := c.Control(func(fd uintptr) {
			sockErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return sockErr
	}}
	return lc.Listen(context.Background(), "tcp", address)
}

// stranger serves on ln as an attacker would: it counts the requests it
// gets and those that carried the endpoint's secret, and answers each with
// a token of its choosing.
type stranger struct{ requests, secrets atomic.Int64 }

func (s *stranger) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	if r.Header.Get("X-Identity-Header") != "" {
		s.secrets.Add(1)
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprint(w, `{"access_token":"chosen-by-the-stranger","expires_on":"4102444800"}`)
}

// askTokens asks the sidecar's token endpoint n times, each on a connection
// of its own, and returns how many answers came from the sidecar (a 200
// that is not the stranger's).
func askTokens(t *testing.T, s *sidecar, n int) (fromSidecar int) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 15 * time.Second}
	for range n {
		req, _ := http.NewRequest(http.MethodGet, s.URL+"/token?applicationName=orders-api", nil)
		req.Header.Set("X-Identity-Header", testIdentityHeader)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("asking the token endpoint: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK && !strings.Contains(string(body), "chosen-by-the-stranger") {
			fromSidecar++
		}
	}
	return fromSidecar
}

// TestSameUserCannotBindBesideTheSidecar: a process of the sidecar's user
// opens a socket with SO_REUSEPORT on the sidecar's address. Through the
// handoff network (the shipped default: a config like those of README and
// docs/, the ConfigMaps', and Caddyfile.example itself) the bind fails, since
// handoff's socket does not set SO_REUSEPORT, and every request reaches
// the sidecar.
// On a plain `bind 127.0.0.1` (Caddy's own listener, which sets it) the
// bind succeeds and Linux gives the stranger a share of the new
// connections: it reads the endpoint's X-IDENTITY-HEADER secret and
// answers with a token of its choosing. That half shows the attack the
// shipped default closes; a user of its own for the sidecar closes it for
// every config (deploy/: TestSidecarRunsAsAUserAndGroupOfItsOwn).
func TestSameUserCannotBindBesideTheSidecar(t *testing.T) {
	const requests = 20
	f := newFleet(t)
	env := append(f.env(testClientSecret), "TEST_IDENTITY_HEADER="+testIdentityHeader)

	t.Run("handoff", func(t *testing.T) {
		s := startSidecar(t, listenerCaddyfile("handoff", "handoff/127.0.0.1"), env...)
		ln, err := listenReusePort(strings.TrimPrefix(s.URL, "http://"))
		if err == nil {
			ln.Close()
			t.Fatal("a same-user socket with SO_REUSEPORT bound the sidecar's handoff/ address")
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatalf("binding beside the sidecar: %v, want EADDRINUSE", err)
		}
		if got := askTokens(t, s, requests); got != requests {
			t.Errorf("%d of %d token requests answered by the sidecar", got, requests)
		}
	})

	t.Run("Caddyfile.example", func(t *testing.T) {
		port, dir := freePort(t), t.TempDir()
		address := fmt.Sprintf("127.0.0.1:%d", port)
		proc := startProcess(t, []string{
			"SIDECAR_PORT=" + fmt.Sprint(port),
			"SIDECAR_ADMIN_SOCKET=" + filepath.Join(dir, "admin.sock"),
			"ENTRA_AUTHORITY_HOST=" + f.issuer,
			"ENTRA_TENANT_ID=" + f.emulator.TenantID(),
			"ENTRA_CLIENT_ID=" + testClientID,
			"ENTRA_CLIENT_SECRET=" + testClientSecret,
			"GRAPH_UPSTREAM=" + f.upstream.server.URL,
			"HOME=" + dir, "XDG_DATA_HOME=" + dir, "XDG_CONFIG_HOME=" + dir,
		}, caddyBinary, "run", "--config", filepath.Join("..", "Caddyfile.example"), "--adapter", "caddyfile")
		waitFor(t, "caddy on "+address, 60*time.Second, func() error {
			if proc.Exited() {
				t.Fatalf("caddy exited:\n%s", proc.Output.String())
			}
			conn, err := net.DialTimeout("tcp", address, 200*time.Millisecond)
			if err != nil {
				return err
			}
			return conn.Close()
		})
		ln, err := listenReusePort(address)
		if err == nil {
			ln.Close()
			t.Fatal("a same-user socket with SO_REUSEPORT bound the address of the sidecar running Caddyfile.example")
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatalf("binding beside the sidecar: %v, want EADDRINUSE", err)
		}
		before := len(f.upstream.requests())
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 15 * time.Second}
		for i := range requests {
			resp, err := client.Get(fmt.Sprintf("http://%s/graph/%d", address, i))
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET /graph/%d: %s\n%s", i, resp.Status, proc.Output.String())
			}
		}
		if got := len(f.upstream.requests()) - before; got != requests {
			t.Errorf("the upstream got %d of %d requests", got, requests)
		}
	})

	t.Run("plain listener", func(t *testing.T) {
		s := startSidecar(t, listenerCaddyfile("", "127.0.0.1"), env...)
		ln, err := listenReusePort(strings.TrimPrefix(s.URL, "http://"))
		if err != nil {
			t.Fatalf("Caddy's own listener no longer lets a same-user SO_REUSEPORT socket bind beside it (%v): the plain listener half of this test shows nothing", err)
		}
		st := new(stranger)
		srv := &http.Server{Handler: st}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		fromSidecar := askTokens(t, s, requests)
		t.Logf("plain listener: the stranger got %d of %d token requests (%d with the secret), the sidecar answered %d",
			st.requests.Load(), requests, st.secrets.Load(), fromSidecar)
		if st.secrets.Load() == 0 {
			t.Errorf("the stranger got none of %d requests: SO_REUSEPORT no longer splits connections", requests)
		}
	})
}
