package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/entra/entratest"
)

const entratestTenant = entratest.DefaultTenantID

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
		{"-client-cert", "/nonexistent.pem"},
		{"-managed-identity", "mi", "-identity-header", ""},
	} {
		if err := run(context.Background(), args, io.Discard, io.Discard, nil); err == nil {
			t.Errorf("run(%q) succeeded", args)
		}
	}
}

// TestRunCertificateAndManagedIdentity: the flags register a certificate
// client and a managed identity that the real client can use.
func TestRunCertificateAndManagedIdentity(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sidecar"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certFile := filepath.Join(t.TempDir(), "sidecar.pem")
	pemData := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})...)
	if err := os.WriteFile(certFile, pemData, 0o600); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout syncBuffer
	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	const mi = "00000000-0000-4000-8000-00000000a001"
	go func() {
		done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-client-cert", certFile, "-managed-identity", mi, "-identity-header", "hdr"}, &stdout, io.Discard, ready)
	}()
	var addr net.Addr
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("run returned early: %v", err)
	}
	base := "http://" + addr.String()
	for _, want := range []string{"client certificate registered for " + defaultClientID, "export IDENTITY_ENDPOINT=" + base + "/msi/token", "export IDENTITY_HEADER=hdr", "IMDS endpoint: " + base + "/metadata/identity/oauth2/token"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout.String())
		}
	}

	clients := map[string]entra.Config{
		"certificate": {TenantID: entratestTenant, ClientID: defaultClientID, AuthorityHost: base, ClientCertificate: &entra.CertificateCredential{CertFile: certFile}},
		"IMDS":        {ManagedIdentity: &entra.ManagedIdentityCredential{IMDSEndpoint: base + "/metadata/identity/oauth2/token"}},
		"App Service": {ManagedIdentity: &entra.ManagedIdentityCredential{IdentityEndpoint: base + "/msi/token", IdentityHeader: "hdr"}},
	}
	for name, cfg := range clients {
		client, err := entra.NewClient(cfg)
		if err != nil {
			t.Fatalf("%s: NewClient: %v", name, err)
		}
		if _, err := client.Token(ctx, []string{"api://orders/.default"}); err != nil {
			t.Errorf("%s: Token: %v", name, err)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}
