package sdktest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// pythonDir holds the Python client, run with the azure-identity of the
// interpreter (Debian's python3-azure; no package of the test's own).
const pythonDir = "python"

// pythonEnv is all a Python client's environment holds besides the
// credential's variables: what an application in the pod would have, no
// AZURE_* of the machine running the test, no proxy.
func pythonEnv(t *testing.T, env ...string) []string {
	return append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "NO_PROXY=*",
		"TEST_AZURE_LOG_LEVEL=" + os.Getenv("TEST_AZURE_LOG_LEVEL")}, env...)
}

// requirePython finds the interpreter that imports azure.identity: Debian's
// /usr/bin/python3 (where python3-azure installs it) first, then python3 on
// PATH. Without one the test is skipped, except under CI=true, where it
// fails.
var (
	pythonOnce     sync.Once
	python         string
	pythonIdentity string // azure.identity.__version__
)

func requirePython(t *testing.T) string {
	t.Helper()
	pythonOnce.Do(func() {
		for _, name := range []string{"/usr/bin/python3", "python3"} {
			path, err := exec.LookPath(name)
			if err != nil {
				continue
			}
			cmd := exec.Command(path, "-I", "-c", "import azure.identity; print(azure.identity.__version__)")
			cmd.Env = pythonEnv(t)
			if out, err := cmd.Output(); err == nil {
				python, pythonIdentity = path, strings.TrimSpace(string(out))
				return
			}
		}
	})
	if python == "" {
		const install = "apt-get install python3-azure"
		if os.Getenv("CI") == "true" {
			t.Fatalf("no python3 imports azure.identity under CI=true (%s)", install)
		}
		t.Skipf("no python3 imports azure.identity (%s); skipping", install)
	}
	t.Logf("azure-identity %s under %s", pythonIdentity, python)
	return python
}

// pythonToken is one line of gettoken.py.
type pythonToken struct {
	Token     string `json:"token"`
	ExpiresOn int64  `json:"expires_on"`
}

// pyGetTokens runs gettoken.py with kind (managed or default) for calls
// get_token calls, in an environment of its own plus env, and returns the
// tokens; on the script's failure, its stderr (the SDK's exception) in the
// error.
func pyGetTokens(t *testing.T, python, kind string, calls int, env ...string) ([]pythonToken, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// -I: no PYTHON* variables, user site or script directory on the path;
	// -B: no bytecode written into the source tree.
	cmd := exec.CommandContext(ctx, python, "-I", "-B", "gettoken.py", kind, testScope, fmt.Sprint(calls))
	cmd.Dir = pythonDir
	cmd.Env = pythonEnv(t, env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("python3 gettoken.py %s: %v\n%s", kind, err, stderr.String())
	}
	var tokens []pythonToken
	scanner := bufio.NewScanner(strings.NewReader(string(out)))
	scanner.Buffer(make([]byte, 64<<10), 1<<20)
	for scanner.Scan() {
		var line pythonToken
		if err := json.Unmarshal(scanner.Bytes(), &line); err != nil {
			return nil, fmt.Errorf("gettoken.py printed a line that is not a token's JSON: %v", err)
		}
		tokens = append(tokens, line)
	}
	if len(tokens) != calls {
		return nil, fmt.Errorf("gettoken.py returned %d tokens, want %d", len(tokens), calls)
	}
	return tokens, nil
}

// checkExpiresOn fails unless the SDK's expires_on is the token's exp (the
// sidecar's expiry is its token request's time plus expires_in, so a few
// seconds of slack).
func (f *fleet) checkExpiresOn(t *testing.T, token pythonToken) {
	t.Helper()
	claims, err := f.emulator.Verify(token.Token)
	if err != nil {
		t.Fatalf("the SDK's token is not the emulator's: %v", err)
	}
	if d := token.ExpiresOn - claims.ExpiresAt.Unix(); d < -5 || d > 5 {
		t.Errorf("the SDK's expires_on is %d s off the token's exp", d)
	}
	if left := time.Until(time.Unix(token.ExpiresOn, 0)); left < 50*time.Minute {
		t.Errorf("the SDK read an expiry %v away, want about an hour", left)
	}
}

// TestPythonSDKCredentials: azure-identity's ManagedIdentityCredential and
// DefaultAzureCredential, configured by the environment alone, get the
// emulator's token for the resource, with its expiry: once through the App
// Service protocol (IDENTITY_ENDPOINT, IDENTITY_HEADER), once through IMDS
// (AZURE_POD_IDENTITY_AUTHORITY_HOST). Each client calls get_token twice
// and asks the sidecar once: the Python SDK caches the token under the
// resource the answer names, so an answer naming another resource than the
// one asked for would cost a request per call.
func TestPythonSDKCredentials(t *testing.T) {
	python := requirePython(t)
	f := newFleet(t)
	replica := f.startReplica(t)
	appService := []string{"IDENTITY_ENDPOINT=" + replica.URL + "/msi/token", "IDENTITY_HEADER=" + testIdentityHeader}
	imds := []string{"AZURE_POD_IDENTITY_AUTHORITY_HOST=" + replica.URL}
	var all []string
	for _, tc := range []struct {
		name, kind, protocol string
		env                  []string
	}{
		{"ManagedIdentityCredential/app_service", "managed", "app_service", appService},
		{"DefaultAzureCredential/app_service", "default", "app_service", appService},
		{"ManagedIdentityCredential/imds", "managed", "imds", imds},
		{"DefaultAzureCredential/imds", "default", "imds", imds},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := replica.handedOut(t, tc.protocol)
			tokens, err := pyGetTokens(t, python, tc.kind, 2, tc.env...)
			if err != nil {
				t.Fatalf("%v\nsidecar logs:\n%s", err, replica.proc.Output.String())
			}
			f.checkToken(t, tokens[0].Token)
			f.checkExpiresOn(t, tokens[0])
			// The second call's expiry is the cache's: MSAL's time of the
			// request plus expires_in where the answer has it (IMDS), a
			// second or so off expires_on.
			f.checkExpiresOn(t, tokens[1])
			if tokens[1].Token != tokens[0].Token {
				t.Error("the second get_token returned another token than the first")
			}
			if got := replica.handedOut(t, tc.protocol) - before; got != 1 {
				t.Errorf("the sidecar handed out %d tokens over %s for 2 get_token calls, want 1 (the SDK used another source, or did not cache the answer)", got, tc.protocol)
			}
			all = append(all, tokens[0].Token)
		})
	}
	if got := f.emulator.TokenRequests(); got != 1 {
		t.Errorf("token requests = %d, want 1 for every client", got)
	}
	assertNoSecrets(t, replica.proc.Output.String(), all...)
}

// TestPythonSDKWrongIdentityHeader: ManagedIdentityCredential with a wrong
// IDENTITY_HEADER gets no token, the sidecar refuses it (403) without a
// token request, and the SDK raises ClientAuthenticationError with the
// status and the sidecar's message.
func TestPythonSDKWrongIdentityHeader(t *testing.T) {
	python := requirePython(t)
	f := newFleet(t)
	replica := f.startReplica(t)
	const refusals = `caddy_entra_endpoint_refusals_total{protocol="app_service",reason="wrong_secret"}`
	tokens, err := pyGetTokens(t, python, "managed", 1,
		"IDENTITY_ENDPOINT="+replica.URL+"/msi/token", "IDENTITY_HEADER=sdktest-wrong-identity-header-0000")
	if err == nil {
		f.checkToken(t, tokens[0].Token)
		t.Fatal("the SDK got a token with a wrong IDENTITY_HEADER")
	}
	const want = "get_token failed: ClientAuthenticationError (status 403): "
	if msg := err.Error(); !strings.Contains(msg, want) || !strings.Contains(msg, "X-IDENTITY-HEADER") {
		t.Errorf("the SDK's error does not report the sidecar's refusal (%q and the message naming X-IDENTITY-HEADER):\n%s", want, msg)
	}
	if got := replica.counter(t, refusals); got != 1 {
		t.Errorf("%s = %d, want 1", refusals, got)
	}
	if got := f.emulator.TokenRequests(); got != 0 {
		t.Errorf("token requests = %d, want 0", got)
	}
	assertNoSecrets(t, replica.proc.Output.String())
}

// TestPythonSDKFleetMakesOneTokenRequest: 5 processes x 20 get_token calls
// for one resource, against 2 replicas sharing one real redis-server, cost
// the fleet one token request.
func TestPythonSDKFleetMakesOneTokenRequest(t *testing.T) {
	python := requirePython(t)
	const processes, calls = 5, 20
	assertFleetFetchesOnce(t, processes, calls, func(replicaURL string) ([]string, error) {
		tokens, err := pyGetTokens(t, python, "managed", calls,
			"IDENTITY_ENDPOINT="+replicaURL+"/msi/token", "IDENTITY_HEADER="+testIdentityHeader)
		var got []string
		for _, token := range tokens {
			got = append(got, token.Token)
		}
		return got, err
	})
}
