package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestQuickstartInjectsTokenWithExampleConfig runs the README's first command
// in-process on Caddyfile.example and checks the token reaches downstream.
func TestQuickstartInjectsTokenWithExampleConfig(t *testing.T) {
	t.Setenv("SIDECAR_PORT", fmt.Sprint(freePort(t)))
	t.Setenv("SIDECAR_ADMIN", fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	for _, name := range []string{"ENTRA_AUTHORITY_HOST", "ENTRA_TENANT_ID", "ENTRA_CLIENT_ID", "ENTRA_CLIENT_SECRET", "GRAPH_UPSTREAM", "ORDERS_UPSTREAM"} {
		t.Setenv(name, "") // restored after the test; startDemo sets them
	}
	d, err := startDemo("../../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

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
