// Package sdktest runs unmodified Azure SDK clients (azidentity for Go,
// @azure/identity for JavaScript, azure-identity for Python) against the
// sidecar's token endpoints: the Caddy binary of ../cmd/caddy, a real
// redis-server and the entratest emulator. It is a module of its own so
// that the SDKs stay out of the main module's dependencies.
package sdktest

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/entra/entratest"
	"github.com/caddy-entra/caddy-entra/internal/testproc"
)

const (
	testClientID       = "11111111-0000-4000-8000-00000000c11e"
	testClientSecret   = "sdktest-secret-Do-Not-Log-2b7e41"
	testIdentityHeader = "sdktest-identity-header-Do-Not-Log-93d0"
	testResource       = "api://orders"
	testScope          = testResource + "/.default"
)

// sidecarCaddyfile is one replica: %[1]d is the site port, %[2]d the admin
// port. The application's own environment names the endpoints:
// IDENTITY_ENDPOINT=http://127.0.0.1:<port>/msi/token, or
// AZURE_POD_IDENTITY_AUTHORITY_HOST=http://127.0.0.1:<port>.
// sidecarGlobals is the global options of every replica: the admin API on
// %[2]d, and the entra app sharing orders-api's token through Redis.
const sidecarGlobals = `{
	admin 127.0.0.1:%[2]d
	entra {
		authority_host {env.TEST_AUTHORITY_HOST}
		tenant_id      {env.TEST_TENANT_ID}
		client_id      {env.TEST_CLIENT_ID}
		client_secret  {env.TEST_CLIENT_SECRET}
		redis {env.TEST_REDIS_URL} {
			key_prefix sdktest:
			insecure_plaintext
		}
		application orders-api ` + testScope + `
	}
}

`

const sidecarCaddyfile = sidecarGlobals + `:%[1]d {
	bind 127.0.0.1
	handle /msi/token {
		entra_token_endpoint app_service {
			secret {env.TEST_IDENTITY_HEADER}
		}
	}
	handle /metadata/identity/oauth2/token* {
		entra_token_endpoint imds
	}
	respond 404
}
`

// caddyBinary is the sidecar built by TestMain.
var caddyBinary string

func TestMain(m *testing.M) { testproc.RunWithCaddy(m, "..", &caddyBinary) }

// The child-process helpers are shared with the integration tests.
var (
	requireTool  = testproc.RequireTool
	freePort     = testproc.FreePort
	waitFor      = testproc.WaitFor
	startProcess = testproc.Start
)

type process = testproc.Process

// fleet is the emulator and a redis-server the replicas share.
type fleet struct {
	emulator *entratest.Emulator
	issuer   string
	redisURL string
}

// newFleet starts the emulator and a real redis-server.
func newFleet(t *testing.T) *fleet {
	t.Helper()
	redisServer := requireTool(t, "redis-server", "apt-get install redis-server")
	emulator, server, err := entratest.NewServer(entratest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(server.Close)
	emulator.AddClient(testClientID, testClientSecret)
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	proc := startProcess(t, nil, redisServer, "--port", fmt.Sprint(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", t.TempDir())
	waitFor(t, "redis-server on "+addr, 10*time.Second, func() error {
		if proc.Exited() {
			return fmt.Errorf("redis-server exited: %s", proc.Output.String())
		}
		conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return err
		}
		return conn.Close()
	})
	return &fleet{emulator: emulator, issuer: server.URL, redisURL: "redis://" + addr + "/0"}
}

// sidecar is one running replica.
type sidecar struct {
	URL      string // http://127.0.0.1:<port>
	AdminURL string
	proc     *process
}

// startReplica runs the Caddy binary on sidecarCaddyfile.
func (f *fleet) startReplica(t *testing.T) *sidecar {
	t.Helper()
	return startReplicaWith(t, sidecarCaddyfile, f.replicaEnv())
}

// replicaEnv is the environment sidecarGlobals and the endpoints' secret
// read, and extra.
func (f *fleet) replicaEnv(extra ...string) []string {
	return append([]string{
		"TEST_AUTHORITY_HOST=" + f.issuer,
		"TEST_TENANT_ID=" + f.emulator.TenantID(),
		"TEST_CLIENT_ID=" + testClientID,
		"TEST_CLIENT_SECRET=" + testClientSecret,
		"TEST_IDENTITY_HEADER=" + testIdentityHeader,
		"TEST_REDIS_URL=" + f.redisURL,
	}, extra...)
}

// startReplicaWith runs the Caddy binary on template, formatted with the
// site port, the admin port and args, in env.
func startReplicaWith(t *testing.T, template string, env []string, args ...any) *sidecar {
	t.Helper()
	port, adminPort := freePort(t), freePort(t)
	dir := t.TempDir()
	config := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(config, fmt.Appendf(nil, template, append([]any{port, adminPort}, args...)...), 0o600); err != nil {
		t.Fatal(err)
	}
	env = append(env, "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	proc := startProcess(t, env, caddyBinary, "run", "--config", config, "--adapter", "caddyfile")
	s := &sidecar{URL: fmt.Sprintf("http://127.0.0.1:%d", port), AdminURL: fmt.Sprintf("http://127.0.0.1:%d", adminPort), proc: proc}
	waitFor(t, "caddy on "+s.URL, 60*time.Second, func() error {
		if proc.Exited() {
			t.Fatalf("caddy exited:\n%s", proc.Output.String())
		}
		resp, err := http.Get(s.URL + "/")
		if err != nil {
			return err
		}
		return resp.Body.Close()
	})
	return s
}

// handedOut reads caddy_entra_endpoint_tokens_total for protocol from the
// replica's metrics (0 when absent).
func (s *sidecar) handedOut(t *testing.T, protocol string) int {
	t.Helper()
	return s.counter(t, `caddy_entra_endpoint_tokens_total{application="orders-api",protocol="`+protocol+`"}`)
}

// counter reads the counter series named by series (name and labels, as
// the metrics page prints them) from the replica's metrics (0 when absent).
func (s *sidecar) counter(t *testing.T, series string) int {
	t.Helper()
	resp, err := http.Get(s.AdminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	_, _ = body.ReadFrom(resp.Body)
	for line := range strings.SplitSeq(body.String(), "\n") {
		if value, ok := strings.CutPrefix(line, series+" "); ok {
			var n int
			fmt.Sscan(value, &n)
			return n
		}
	}
	return 0
}

// checkToken fails unless token was issued by the emulator to the sidecar's
// client for testResource.
func (f *fleet) checkToken(t *testing.T, token string) {
	t.Helper()
	claims, err := f.emulator.Verify(token)
	if err != nil {
		t.Fatalf("the SDK's token is not the emulator's: %v", err)
	}
	if claims.Audience != testResource || claims.AppID != testClientID {
		t.Fatalf("the SDK's token is for aud %q appid %q, want %q %q", claims.Audience, claims.AppID, testResource, testClientID)
	}
}

// assertNoSecrets fails when a replica's logs hold a secret or a token.
func assertNoSecrets(t *testing.T, logs string, tokens ...string) {
	t.Helper()
	for _, secret := range append([]string{testClientSecret, testIdentityHeader}, tokens...) {
		if secret != "" && strings.Contains(logs, secret) {
			t.Error("a secret or token appears in the sidecar logs")
		}
	}
}

// assertFleetFetchesOnce runs processes clients, each making calls token
// calls through getTokens against one of two replicas sharing one real
// redis-server, and checks that every client got the fleet's one token
// and that the fleet made one token request for them all.
func assertFleetFetchesOnce(t *testing.T, processes, calls int, getTokens func(replicaURL string) ([]string, error)) {
	t.Helper()
	f := newFleet(t)
	replicas := []*sidecar{f.startReplica(t), f.startReplica(t)}
	var wg sync.WaitGroup
	results := make(chan []string, processes)
	failures := make(chan error, processes)
	for i := range processes {
		replica := replicas[i%len(replicas)]
		wg.Go(func() {
			tokens, err := getTokens(replica.URL)
			if err != nil {
				failures <- err
				return
			}
			results <- tokens
		})
	}
	wg.Wait()
	close(results)
	close(failures)
	for err := range failures {
		t.Error(err)
	}
	var first string
	got := 0
	for tokens := range results {
		for _, token := range tokens {
			if first == "" {
				f.checkToken(t, token)
				first = token
			}
			if token != first {
				t.Fatal("clients got different tokens; want the fleet's one token")
			}
			got++
		}
	}
	if got != processes*calls {
		t.Fatalf("%d tokens, want %d", got, processes*calls)
	}
	handedOut := 0
	for _, replica := range replicas {
		handedOut += replica.handedOut(t, "app_service")
	}
	t.Logf("%d processes x %d calls: %d answered by the replicas' endpoints, %d token request(s) to Entra",
		processes, calls, handedOut, f.emulator.TokenRequests())
	if n := f.emulator.TokenRequests(); n != 1 {
		// A replica that took a Redis call's timeouts for an outage says
		// "token store unavailable" and fetches on its own.
		t.Errorf("token requests = %d, want 1 for the fleet; the replicas' warnings:\n%s", n,
			warnings(replicas[0].proc.Output.String()+replicas[1].proc.Output.String()))
	}
	for _, replica := range replicas {
		assertNoSecrets(t, replica.proc.Output.String(), first)
	}
}
