package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/caddy-entra/caddy-entra/internal/testproc"
)

// startExampleDemo runs the quick start on Caddyfile.example on a free port,
// restoring the environment startDemo changes when the test ends.
func startExampleDemo(t *testing.T) *demo {
	t.Helper()
	t.Setenv("SIDECAR_PORT", fmt.Sprint(freePort(t)))
	for _, name := range []string{"ENTRA_AUTHORITY_HOST", "ENTRA_TENANT_ID", "ENTRA_CLIENT_ID", "ENTRA_CLIENT_SECRET", "GRAPH_UPSTREAM", "ORDERS_UPSTREAM", "SIDECAR_ADMIN_SOCKET"} {
		t.Setenv(name, "") // restored after the test; startDemo sets them
	}
	d, err := startDemo("../../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

// freePort is a loopback port no other part of this test process was given.
var freePort = testproc.FreePort

// TestQuickstartInjectsTokenWithExampleConfig runs the README's first command
// in-process on Caddyfile.example and checks the token reaches downstream.
func TestQuickstartInjectsTokenWithExampleConfig(t *testing.T) {
	d := startExampleDemo(t)

	for _, path := range []string{"/graph/v1.0/me", "/graph/v1.0/users"} {
		report, err := d.Request(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(report, `"aud": "https://graph.microsoft.com"`) {
			t.Errorf("report lacks the Graph audience:\n%s", report)
		}
		if strings.Contains(report, "eyJ") {
			t.Error("the report prints a token")
		}
	}
	report, err := d.Request(context.Background(), "/orders/v1/orders")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(report, `"aud": "api://11111111-2222-3333-4444-555555555555"`) {
		t.Errorf("orders route got the wrong audience:\n%s", report)
	}
	if got := d.emulator.TokenRequests(); got != 2 {
		t.Errorf("token requests = %d, want 2 (one per application, then cached)", got)
	}
}

// TestQuickstartCallsOnBehalfOfTheUser: the example's graph-as-user route
// exchanges the signed-in user's token for a Graph token of the same user,
// and the quick start prints no token.
func TestQuickstartCallsOnBehalfOfTheUser(t *testing.T) {
	d := startExampleDemo(t)
	for range 2 {
		report, err := d.RequestAsUser(context.Background(), "/graph-as-user/v1.0/me")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{`"idtyp": "user"`, `"oid": "` + demoUserID + `"`, `"scp": "User.Read"`, `"aud": "https://graph.microsoft.com"`} {
			if !strings.Contains(report, want) {
				t.Errorf("report lacks %s:\n%s", want, report)
			}
		}
		if strings.Contains(report, "eyJ") {
			t.Error("the report prints a token")
		}
	}
	// Each RequestAsUser issues a new user token: one exchange each.
	if got := d.emulator.OnBehalfOfRequests(); got != 2 {
		t.Errorf("on-behalf-of exchanges = %d, want 2 (one per user token)", got)
	}
}

// unixSocketClient is an HTTP client that reaches every URL through the Unix
// socket at path, as curl --unix-socket does.
func unixSocketClient(path string) *http.Client {
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dialer net.Dialer
			return dialer.DialContext(ctx, "unix", path)
		}},
	}
}

func getBody(t *testing.T, client *http.Client, url string) string {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v %s", url, resp.StatusCode, err, body)
	}
	return string(body)
}

// TestExampleServesAdminOnlyOnPrivateUnixSocket: whoever reaches the admin
// API can load a config that sends the client secret anywhere, and every
// container of a pod shares loopback. Caddyfile.example, run as the quick
// start runs it, must serve the admin API on a Unix socket that only its
// user may open (0600, in a 0700 directory), and on no TCP address.
func TestExampleServesAdminOnlyOnPrivateUnixSocket(t *testing.T) {
	d := startExampleDemo(t)

	info, err := os.Stat(d.AdminSocket)
	if err != nil {
		t.Fatalf("the admin socket: %v", err)
	}
	if info.Mode().Type() != fs.ModeSocket || info.Mode().Perm() != 0o600 {
		t.Errorf("admin socket mode = %v, want a socket with permissions 0600", info.Mode())
	}
	if dir, err := os.Stat(filepath.Dir(d.AdminSocket)); err != nil || dir.Mode().Perm() != 0o700 {
		t.Errorf("admin socket directory: %v %v, want mode 0700", dir.Mode(), err)
	}

	// The admin API answers on the socket, and the config it serves listens
	// there alone (Caddy runs one admin endpoint: none is left on TCP).
	admin := unixSocketClient(d.AdminSocket)
	var listen string
	if err := json.Unmarshal([]byte(getBody(t, admin, "http://localhost/config/admin/listen")), &listen); err != nil {
		t.Fatal(err)
	}
	if want := "unix/" + d.AdminSocket + "|0600"; listen != want {
		t.Errorf("admin.listen = %q, want %q", listen, want)
	}
	config := getBody(t, admin, "http://localhost/config/")
	if strings.Contains(config, demoClientSecret) || !strings.Contains(config, "{env.ENTRA_CLIENT_SECRET}") {
		t.Error("GET /config/ must show the secret's placeholder, not the secret")
	}

	// Caddy's default admin address must not be this process's admin. Some
	// other program may listen there; it must not serve this config.
	if resp, err := http.Get("http://localhost:2019/config/"); err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(body), d.AdminSocket) {
			t.Error("the admin API also answers on TCP localhost:2019")
		}
	}
}

// TestExampleRefusesAnEmptyAdminSocket: {$SIDECAR_ADMIN_SOCKET:default}
// keeps a variable that is set but empty, which makes the admin address
// "unix/|0600". Caddy must refuse that config rather than serve the admin
// API anywhere (Linux would bind an empty path to an abstract socket, which
// has no file permissions).
func TestExampleRefusesAnEmptyAdminSocket(t *testing.T) {
	t.Setenv("SIDECAR_ADMIN_SOCKET", "")
	t.Setenv("SIDECAR_PORT", fmt.Sprint(freePort(t)))
	for name, value := range map[string]string{
		"ENTRA_AUTHORITY_HOST": "http://127.0.0.1:9",
		"ENTRA_TENANT_ID":      "00000000-0000-4000-8000-000000000001",
		"ENTRA_CLIENT_ID":      demoClientID,
		"ENTRA_CLIENT_SECRET":  demoClientSecret,
	} {
		t.Setenv(name, value)
	}
	caddyfile, err := os.ReadFile("../../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	config, _, err := caddyconfig.GetAdapter("caddyfile").Adapt(caddyfile, nil)
	if err != nil {
		t.Fatal(err)
	}
	var adapted struct {
		Admin struct {
			Listen string `json:"listen"`
		} `json:"admin"`
	}
	if err := json.Unmarshal(config, &adapted); err != nil {
		t.Fatal(err)
	}
	if adapted.Admin.Listen != "unix/|0600" {
		t.Fatalf("admin.listen with an empty SIDECAR_ADMIN_SOCKET = %q, want unix/|0600", adapted.Admin.Listen)
	}
	t.Cleanup(func() {
		_ = caddy.Load([]byte(adminOff), true)
		_ = caddy.Stop()
	})
	err = caddy.Load(config, true)
	if err == nil || !strings.Contains(err.Error(), "administration endpoint") {
		t.Fatalf("loading the example with an empty admin socket path: err = %v, want the admin endpoint refused", err)
	}
}
