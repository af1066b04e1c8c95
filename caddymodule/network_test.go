package caddymodule

import (
	"context"
	"net"
	"strings"
	"testing"
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
