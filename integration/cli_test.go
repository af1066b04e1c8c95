package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddy-entra/caddy-entra/entra/entratest"
)

// cliCaddyfile is a config with two applications for `caddy entra`.
const cliCaddyfile = `{
	admin off
	entra {
		authority_host {env.TEST_AUTHORITY_HOST}
		tenant_id      {env.TEST_TENANT_ID}
		client_id      {env.TEST_CLIENT_ID}
		client_secret  {env.TEST_CLIENT_SECRET}
		application orders-api {
			scope ` + testScope + `
		}
		application graph-api {
			scope https://graph.microsoft.com/.default
		}
	}
}
:0 {
	entra_token orders-api
	respond "unused"
}
`

// runCLI runs `caddy entra <args>` on cliCaddyfile and returns its exit
// code and output.
func runCLI(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	return runCLIOn(t, cliCaddyfile, env, args...)
}

// runCLIOn is runCLI on caddyfile.
func runCLIOn(t *testing.T, caddyfile string, env []string, args ...string) (int, string) {
	t.Helper()
	dir := t.TempDir()
	config := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(config, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(caddyBinary, append(append([]string{"entra"}, args...), "--config", config, "--adapter", "caddyfile")...)
	cmd.Env = append(append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir), env...)
	out, err := cmd.CombinedOutput()
	code := 0
	if exitErr, ok := err.(*exec.ExitError); ok {
		code = exitErr.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, string(out)
}

// cliEnv points the config at emulator with secret.
func cliEnv(url string, emulator *entratest.Emulator, tenant, secret string) []string {
	return []string{"TEST_AUTHORITY_HOST=" + url, "TEST_TENANT_ID=" + tenant,
		"TEST_CLIENT_ID=" + testClientID, "TEST_CLIENT_SECRET=" + secret}
}

func TestCLITokenPrintsMetadataAndTheTokenOnlyWhenAsked(t *testing.T) {
	emulator, url := newEmulator(t)
	emulator.AddClient(testClientID, testClientSecret)
	env := cliEnv(url, emulator, emulator.TenantID(), testClientSecret)

	code, out := runCLI(t, env, "token", "orders-api")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	start := strings.Index(out, "{\n")
	var info struct {
		ApplicationName string            `json:"applicationName"`
		Scope           string            `json:"scope"`
		Identity        map[string]string `json:"identity"`
		Fingerprint     string            `json:"fingerprint"`
		Claims          map[string]any    `json:"claims"`
	}
	if start < 0 || json.NewDecoder(strings.NewReader(out[start:])).Decode(&info) != nil {
		t.Fatalf("no JSON metadata in the output:\n%s", out)
	}
	if info.ApplicationName != "orders-api" || info.Scope != testScope || info.Identity["client_id"] != testClientID ||
		info.Identity["credential"] != "client_secret" || len(info.Fingerprint) != 12 || info.Claims["aud"] != "api://orders" {
		t.Errorf("metadata = %+v", info)
	}
	if strings.Contains(out, "eyJ") || strings.Contains(out, testClientSecret) {
		t.Error("the output holds a token or the secret without --print-token")
	}

	code, out = runCLI(t, env, "token", "orders-api", "--print-token")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	token := lines[len(lines)-1]
	if code != 0 {
		t.Fatalf("--print-token: exit %d:\n%s", code, out)
	}
	if _, err := emulator.Verify(token); err != nil {
		t.Errorf("--print-token's last line is not an issued token: %v", err)
	}

	if code, out = runCLI(t, env, "token", "billing-api"); code == 0 || !strings.Contains(out, "MICROSOFT_APPLICATION_NOT_FOUND") {
		t.Errorf("an unknown application: exit %d:\n%s", code, out)
	}
}

func TestCLIExplainsTheCommonAADSTSErrors(t *testing.T) {
	for _, tt := range []struct {
		name    string
		setup   func(e *entratest.Emulator) (tenant, secret string)
		code    int
		hintHas string
	}{
		{"wrong secret", func(e *entratest.Emulator) (string, string) { return e.TenantID(), "wrong-secret" }, 7000215, "Value"},
		{"unknown client", func(e *entratest.Emulator) (string, string) {
			return e.TenantID(), testClientSecret // the client is not registered
		}, 700016, "client_id"},
		{"unknown tenant", func(e *entratest.Emulator) (string, string) {
			return "99999999-0000-4000-8000-000000000009", testClientSecret
		}, 90002, "tenant_id"},
		{"expired secret", func(e *entratest.Emulator) (string, string) {
			e.FailNext(1, entratest.Failure{Status: 401, Error: "invalid_client", ErrorCodes: []int{7000222},
				Description: "AADSTS7000222: The provided client secret keys for app are expired."})
			return e.TenantID(), testClientSecret
		}, 7000222, "expired"},
		{"scope not found", func(e *entratest.Emulator) (string, string) {
			e.FailNext(1, entratest.Failure{Status: 400, Error: "invalid_resource", ErrorCodes: []int{500011},
				Description: "AADSTS500011: The resource principal named api://orders was not found in the tenant."})
			return e.TenantID(), testClientSecret
		}, 500011, "Application ID URI"},
		{"consent missing", func(e *entratest.Emulator) (string, string) {
			e.FailNext(1, entratest.Failure{Status: 400, Error: "invalid_grant", ErrorCodes: []int{65001},
				Description: "AADSTS65001: The user or administrator has not consented to use the application."})
			return e.TenantID(), testClientSecret
		}, 65001, "consent"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			emulator, url := newEmulator(t)
			if tt.name != "unknown client" {
				emulator.AddClient(testClientID, testClientSecret)
			}
			tenant, secret := tt.setup(emulator)
			code, out := runCLI(t, cliEnv(url, emulator, tenant, secret), "token", "orders-api")
			if code == 0 {
				t.Fatalf("exit 0:\n%s", out)
			}
			for _, want := range []string{"MICROSOFT_TOKEN_REQUEST_FAILED", "AADSTS" + jsonNumber(tt.code), "trace_id:", "hint:", tt.hintHas} {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
			if strings.Contains(out, secret) {
				t.Error("the output holds the secret")
			}
		})
	}
}

func TestCLICheckReportsEveryApplication(t *testing.T) {
	emulator, url := newEmulator(t)
	emulator.AddClient(testClientID, testClientSecret)
	env := cliEnv(url, emulator, emulator.TenantID(), testClientSecret)
	code, out := runCLI(t, env, "check")
	if code != 0 || !strings.Contains(out, "orders-api") || !strings.Contains(out, "graph-api") || strings.Count(out, " ok ") != 2 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	emulator.FailNext(1, entratest.Failure{Status: 400, Error: "invalid_resource", ErrorCodes: []int{500011}})
	code, out = runCLI(t, env, "check")
	if code == 0 || !strings.Contains(out, "FAILED") || strings.Count(out, " ok ") != 1 {
		t.Fatalf("one failing application: exit %d:\n%s", code, out)
	}
	if strings.Contains(out, "eyJ") || strings.Contains(out, testClientSecret) {
		t.Error("check printed a token or the secret")
	}
}

func jsonNumber(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// `caddy entra check` tests an on-behalf-of application's credential (a
// client-credentials token for its scopes' resource: the exchange needs a
// user's token), and `caddy entra token` says it has no token of its own.
func TestCLIOnBehalfOfApplication(t *testing.T) {
	emulator, url := newEmulator(t)
	emulator.AddClient(testClientID, testClientSecret)
	env := cliEnv(url, emulator, emulator.TenantID(), testClientSecret)
	caddyfile := strings.Replace(cliCaddyfile, "application graph-api {\n\t\t\tscope https://graph.microsoft.com/.default\n\t\t}",
		"application graph-as-user {\n\t\t\tscope https://graph.microsoft.com/User.Read\n\t\t\ton_behalf_of\n\t\t}", 1)
	if !strings.Contains(caddyfile, "on_behalf_of") {
		t.Fatal("the config has no on-behalf-of application")
	}
	code, out := runCLIOn(t, caddyfile, env, "check")
	if code != 0 || !strings.Contains(out, "graph-as-user") || strings.Count(out, " ok ") != 2 || !strings.Contains(out, "aud https://graph.microsoft.com") {
		t.Fatalf("check: exit %d:\n%s", code, out)
	}
	code, out = runCLIOn(t, caddyfile, env, "token", "graph-as-user")
	if code == 0 || !strings.Contains(out, "exchanges users' tokens") {
		t.Fatalf("token: exit %d:\n%s", code, out)
	}
	if emulator.OnBehalfOfRequests() != 0 {
		t.Error("the CLI made an on-behalf-of exchange")
	}
}
