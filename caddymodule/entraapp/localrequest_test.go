package entraapp

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestHostRule(t *testing.T) {
	hosts, err := checkHosts([]string{"sidecar", "Entra-Sidecar.internal."})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		host string
		want bool
	}{
		{"", true},
		{"127.0.0.1", true},
		{"127.0.0.1:8080", true},
		{"10.1.2.3:8080", true},
		{"[::1]:8080", true},
		{"[::1]", true},
		{"::1", true},
		{"[fe80::1%25eth0]:8080", true},
		{"localhost", true},
		{"LOCALHOST:8080", true},
		{"localhost.:8080", true},
		{"app.localhost:8080", true},
		{"sidecar", true},
		{"sidecar:8080", true},
		{"SideCar.:9", true},
		{"entra-sidecar.internal:443", true},
		{"rebind.attacker.example:8080", false},
		{"rebind.attacker.example", false},
		{"sidecar.attacker.example", false},
		{"localhost.attacker.example", false},
		{"attacker-localhost", false},
		{"sidecarx", false},
	} {
		if got := isLocalHost(tc.host, hosts); got != tc.want {
			t.Errorf("Host %q: local %v, want %v", tc.host, got, tc.want)
		}
	}
	if isLocalHost("sidecar:8080", nil) {
		t.Error("a service name is accepted without the hosts option")
	}
}

func TestHostsEntriesCheckedAtLoad(t *testing.T) {
	for _, tc := range []struct {
		entry, want string
	}{
		{"", "must not be empty"},
		{"sidecar:8080", "without a port"},
		{"http://sidecar", "without a scheme"},
		{"*.svc.cluster.local", "wildcards are not supported"},
		{"127.0.0.1", "IP addresses are always accepted"},
		{"[::1]", "IP addresses are always accepted"},
		{"side car", "not a DNS name"},
		{"sidecar/x", "not a DNS name"},
		{"a..b", "not a DNS name"},
	} {
		app, _, _ := newTestApp(t, unitClientSecret)
		fresh := &App{IdentityConfig: app.IdentityConfig, Applications: app.Applications, Hosts: []string{"ok", tc.entry}}
		err := fresh.provision(caddy.NewReplacer())
		if err == nil {
			_ = fresh.Cleanup()
			t.Errorf("hosts entry %q accepted", tc.entry)
			continue
		}
		if !strings.Contains(err.Error(), "MICROSOFT_PROVIDER_INVALID_CONFIG: hosts[1]") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("hosts entry %q: %v, want hosts[1] and %q", tc.entry, err, tc.want)
		}
	}
	hosts, err := checkHosts([]string{" Sidecar ", "orders-sidecar.default.svc.cluster.local."})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"sidecar", "orders-sidecar.default.svc.cluster.local"} {
		if _, ok := hosts[name]; !ok {
			t.Errorf("%q is not in %v", name, hosts)
		}
	}
}

func TestUnmarshalCaddyfileHosts(t *testing.T) {
	var app App
	input := "entra {\n hosts sidecar entra-sidecar.internal\n hosts orders-sidecar\n application a s/.default\n }"
	if err := app.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(app.Hosts)
	if string(got) != `["sidecar","entra-sidecar.internal","orders-sidecar"]` {
		t.Errorf("hosts = %s", got)
	}
	var empty App
	err := empty.UnmarshalCaddyfile(caddyfile.NewTestDispenser("entra {\n hosts\n }"))
	if err == nil || !strings.Contains(err.Error(), "hosts: at least one name is required") {
		t.Errorf("hosts without a name: %v", err)
	}
}

// TestRefusalLogLetsOneEntryThroughPerInterval: a refusal a web page can
// cause at will is logged at most once per refusalLogInterval, the entry
// saying how many were not logged since.
func TestRefusalLogLetsOneEntryThroughPerInterval(t *testing.T) {
	var log RefusalLog
	start := time.Unix(1_800_000_000, 0)
	if ok, n := log.Allow(start); !ok || n != 0 {
		t.Fatalf("first refusal: logged %v, %d unlogged; want logged, 0", ok, n)
	}
	for i := 1; i <= 3; i++ {
		if ok, _ := log.Allow(start.Add(time.Duration(i) * time.Second)); ok {
			t.Fatalf("refusal %d within the interval was logged", i)
		}
	}
	if ok, n := log.Allow(start.Add(refusalLogInterval)); !ok || n != 3 {
		t.Fatalf("first refusal after the interval: logged %v, %d unlogged; want logged, 3", ok, n)
	}
	var none *RefusalLog
	if ok, _ := none.Allow(start); !ok {
		t.Fatal("a nil RefusalLog refused an entry")
	}
}
