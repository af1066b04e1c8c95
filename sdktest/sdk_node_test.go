package sdktest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// jsDir holds the Node.js client and its lockfile-pinned @azure/identity,
// and the OAuth 2.0 server oidc-provider.
const jsDir = "js"

// nodeReady finds node and installs the pinned packages (npm ci) when they
// are missing; without node or npm the test is skipped, except under
// CI=true, where it fails.
var nodeOnce sync.Once
var nodeErr error

func requireNode(t *testing.T) string {
	t.Helper()
	node := requireTool(t, "node", "apt-get install nodejs npm")
	npm := requireTool(t, "npm", "apt-get install nodejs npm")
	nodeOnce.Do(func() {
		_, identityErr := os.Stat(filepath.Join(jsDir, "node_modules", "@azure", "identity"))
		_, providerErr := os.Stat(filepath.Join(jsDir, "node_modules", "oidc-provider"))
		if identityErr == nil && providerErr == nil {
			return
		}
		cmd := exec.Command(npm, "ci", "--no-audit", "--no-fund")
		cmd.Dir = jsDir
		if out, err := cmd.CombinedOutput(); err != nil {
			nodeErr = fmt.Errorf("npm ci: %v\n%s", err, out)
		}
	})
	if nodeErr != nil {
		t.Fatal(nodeErr)
	}
	return node
}

// jsGetTokens runs gettoken.js with kind (managed or default) for calls
// getToken calls, in an environment of its own plus env, and returns the
// tokens.
func jsGetTokens(t *testing.T, node, kind string, calls int, env ...string) ([]string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "gettoken.js", kind, testScope, fmt.Sprint(calls))
	cmd.Dir = jsDir
	// Only what an application in the pod would have: no AZURE_* of the
	// machine running the test, no proxy.
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "NO_PROXY=*", "AZURE_LOG_LEVEL=" + os.Getenv("TEST_AZURE_LOG_LEVEL")}, env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("node gettoken.js %s: %v\n%s", kind, err, stderr.String())
	}
	var tokens []string
	scanner := bufio.NewScanner(strings.NewReader(string(out)))
	scanner.Buffer(make([]byte, 64<<10), 1<<20)
	for scanner.Scan() {
		var line struct {
			Token string `json:"token"`
		}
		if err := json.Unmarshal(scanner.Bytes(), &line); err != nil {
			return nil, fmt.Errorf("gettoken.js printed %q", scanner.Text())
		}
		tokens = append(tokens, line.Token)
	}
	if len(tokens) != calls {
		return nil, fmt.Errorf("gettoken.js returned %d tokens, want %d", len(tokens), calls)
	}
	return tokens, nil
}

// TestJSSDKCredentials: @azure/identity's ManagedIdentityCredential and
// DefaultAzureCredential, configured by the environment alone, get the
// emulator's token for the resource: once through the App Service protocol
// (IDENTITY_ENDPOINT, IDENTITY_HEADER), once through IMDS
// (AZURE_POD_IDENTITY_AUTHORITY_HOST).
func TestJSSDKCredentials(t *testing.T) {
	node := requireNode(t)
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
			tokens, err := jsGetTokens(t, node, tc.kind, 1, tc.env...)
			if err != nil {
				t.Fatalf("%v\nsidecar logs:\n%s", err, replica.proc.Output.String())
			}
			f.checkToken(t, tokens[0])
			if got := replica.handedOut(t, tc.protocol) - before; got != 1 {
				t.Errorf("the sidecar handed out %d tokens over %s, want 1 (the SDK used another source?)", got, tc.protocol)
			}
			all = append(all, tokens...)
		})
	}
	if got := f.emulator.TokenRequests(); got != 1 {
		t.Errorf("token requests = %d, want 1 for every client", got)
	}
	assertNoSecrets(t, replica.proc.Output.String(), all...)
}

// TestJSSDKFleetMakesOneTokenRequest: 5 processes x 20 getToken calls for
// one resource, against 2 replicas sharing one real redis-server, cost the
// fleet one token request.
func TestJSSDKFleetMakesOneTokenRequest(t *testing.T) {
	node := requireNode(t)
	const processes, calls = 5, 20
	assertFleetFetchesOnce(t, processes, calls, func(replicaURL string) ([]string, error) {
		return jsGetTokens(t, node, "managed", calls,
			"IDENTITY_ENDPOINT="+replicaURL+"/msi/token", "IDENTITY_HEADER="+testIdentityHeader)
	})
}

// warnings returns the warning and error lines of a replica's JSON logs.
func warnings(logs string) string {
	var lines []string
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, `"level":"warn"`) || strings.Contains(line, `"level":"error"`) {
			lines = append(lines, line)
		}
	}
	return strings.Join(lines, "\n")
}
