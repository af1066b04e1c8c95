package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/entra"
)

// syncBuffer is a bytes.Buffer safe to write from run and read from the test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestRunServesTokensAndShutsDown(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout syncBuffer
	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-tenant", "contoso.onmicrosoft.com", "-lifetime", "10m"}, &stdout, io.Discard, ready)
	}()

	var addr net.Addr
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("run returned early: %v", err)
	}
	authority := "http://" + addr.String()
	for _, want := range []string{
		"export ENTRA_AUTHORITY_HOST=" + authority,
		"export ENTRA_TENANT_ID=contoso.onmicrosoft.com",
		"export ENTRA_CLIENT_ID=" + defaultClientID,
		"export ENTRA_CLIENT_SECRET=" + defaultClientSecret,
	} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout.String())
		}
	}

	// The printed settings work with the real client.
	client, err := entra.NewClient(entra.Config{
		TenantID: "contoso.onmicrosoft.com", ClientID: defaultClientID, ClientSecret: defaultClientSecret, AuthorityHost: authority,
	})
	if err != nil {
		t.Fatal(err)
	}
	token, err := client.Token(ctx, []string{"api://orders/.default"})
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	if token.ExpiresIn != 10*time.Minute {
		t.Errorf("ExpiresIn = %s, want 10m", token.ExpiresIn)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	if !strings.Contains(stdout.String(), "stopped after 1 token requests (1 tokens issued)") {
		t.Errorf("stdout lacks the shutdown summary:\n%s", stdout.String())
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-lifetime", "0s"},
		{"-client-secret", ""},
		{"-tenant", "a/b", "-listen", "127.0.0.1:0"},
		{"-listen", "not an address"},
		{"extra"},
	} {
		if err := run(context.Background(), args, io.Discard, io.Discard, nil); err == nil {
			t.Errorf("run(%q) succeeded", args)
		}
	}
}
