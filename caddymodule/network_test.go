package caddymodule

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
)

func TestParsePortRange(t *testing.T) {
	for in, want := range map[string][2]uint64{"8080": {8080, 8080}, "8080-8082": {8080, 8082}, "0": {0, 0}} {
		start, end, err := parsePortRange(in)
		if err != nil || start != want[0] || end != want[1] {
			t.Errorf("parsePortRange(%q) = %d, %d, %v; want %v", in, start, end, err, want)
		}
	}
	for _, in := range []string{"", "http", "70000", "9-8", "8080-"} {
		if _, _, err := parsePortRange(in); err == nil {
			t.Errorf("parsePortRange(%q) accepted", in)
		}
	}
}

func TestListenHandoffServesTheOffsetPort(t *testing.T) {
	ln, err := listenHandoff(context.Background(), HandoffNetwork, "127.0.0.1", "0", 0, net.ListenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.(net.Listener).Close()
	if _, err := listenHandoff(context.Background(), HandoffNetwork, "127.0.0.1", "8080", 1, net.ListenConfig{}); err == nil || !strings.Contains(err.Error(), "outside") {
		t.Fatalf("offset past the range: err = %v", err)
	}
}

func TestListenHandoffRefusesAnEmptyHost(t *testing.T) {
	_, err := listenHandoff(context.Background(), HandoffNetwork, "", "0", 0, net.ListenConfig{})
	if err == nil || !strings.Contains(err.Error(), "every interface") {
		t.Fatalf("empty host: err = %v, want a refusal naming every interface", err)
	}
	// Every interface is still possible, written out.
	for _, host := range []string{"0.0.0.0", "::"} {
		ln, err := listenHandoff(context.Background(), HandoffNetwork, host, "0", 0, net.ListenConfig{})
		if err != nil {
			if host == "::" && strings.Contains(err.Error(), "address family not supported") {
				continue // a machine without IPv6
			}
			t.Fatalf("host %q: %v", host, err)
		}
		ln.(net.Listener).Close()
	}
}

// TestHandoffBindWithoutHostIsRefusedAtLoad loads whole Caddyfiles: Caddy
// hands `bind handoff/` to the network with an empty host, and so does an
// empty variable with a default, since {$VAR:default} keeps a set but
// empty value. Both must fail to load rather than listen on every
// interface; a written host loads and serves.
func TestHandoffBindWithoutHostIsRefusedAtLoad(t *testing.T) {
	t.Setenv("CADDY_ENTRA_TEST_BIND", "")
	port := freeTCPPort(t)
	site := func(bind string) string {
		return fmt.Sprintf("{\n\tadmin off\n\tpersist_config off\n}\n:%d {\n\tbind %s\n\trespond ok\n}\n", port, bind)
	}
	load := func(caddyfile string) error {
		config, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
		if err != nil {
			t.Fatalf("adapting:\n%s\n%v", caddyfile, err)
		}
		return caddy.Load(config, true)
	}
	t.Cleanup(func() { _ = caddy.Stop() })

	for _, bind := range []string{"handoff/", "handoff/{$CADDY_ENTRA_TEST_BIND:127.0.0.1}"} {
		err := load(site(bind))
		if err == nil || !strings.Contains(err.Error(), "would listen on every interface") {
			t.Errorf("bind %s: err = %v, want the load refused for listening on every interface", bind, err)
		}
		_ = caddy.Stop()
	}

	if err := load(site("handoff/127.0.0.1")); err != nil {
		t.Fatalf("bind handoff/127.0.0.1: %v", err)
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "ok" {
		t.Errorf("bind handoff/127.0.0.1 answered %q", body)
	}
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestMayBeHandoffAddress(t *testing.T) {
	for address, want := range map[string]bool{
		"handoff/127.0.0.1:8080":   true,
		"HANDOFF/127.0.0.1:8080":   true, // Caddy lowercases network names
		"{env.SIDECAR_LISTEN}":     true, // may become one
		"127.0.0.1:8080":           false,
		"tcp/127.0.0.1:8080":       false,
		"unix//run/sidecar.sock":   false,
		" handoff/[::1]:8080-8089": true,
	} {
		if got := mayBeHandoffAddress(address); got != want {
			t.Errorf("mayBeHandoffAddress(%q) = %v, want %v", address, got, want)
		}
	}
}
