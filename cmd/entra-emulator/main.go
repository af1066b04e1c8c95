// Command entra-emulator runs an Entra ID-compatible token endpoint
// (package entra/entratest) on a local address, for developing and testing
// the sidecar without a real tenant.
//
//	entra-emulator [-listen 127.0.0.1:9400] [-tenant ID] [-client-id ID]
//	               [-client-secret SECRET] [-lifetime 1h]
//	               [-client-cert cert.pem] [-managed-identity CLIENT_ID]
//	               [-identity-header SECRET]
//
// -client-cert registers the certificate in a PEM file (its first
// CERTIFICATE block; a key in the same file is ignored) as a certificate
// credential of -client-id, so the sidecar can authenticate with
// client_certificate. -managed-identity gives the emulated host a
// system-assigned managed identity with that client ID, served over IMDS
// (/metadata/identity/oauth2/token) and the App Service protocol
// (/msi/token, X-IDENTITY-HEADER = -identity-header).
//
// On start it prints the environment variables that point the sidecar at it.
// The client secret and identity header are the emulator's own development
// secrets, so printing them is fine. It stops gracefully on SIGINT or
// SIGTERM.
package main

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/caddy-entra/caddy-entra/entra/entratest"
)

// Defaults of the flags.
const (
	defaultListen       = "127.0.0.1:9400"
	defaultClientID     = "00000000-0000-4000-8000-0000000000c1"
	defaultClientSecret = "emulator-secret"
	defaultIdentityHdr  = "emulator-identity-header"
	shutdownTimeout     = 5 * time.Second
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, nil); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "entra-emulator:", err)
		os.Exit(1)
	}
}

// run serves until ctx is done. When ready is not nil it receives the
// listener's address once the emulator accepts connections.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, ready chan<- net.Addr) error {
	flags := flag.NewFlagSet("entra-emulator", flag.ContinueOnError)
	flags.SetOutput(stderr)
	listen := flags.String("listen", defaultListen, "address to listen on")
	tenant := flags.String("tenant", entratest.DefaultTenantID, "tenant ID served")
	clientID := flags.String("client-id", defaultClientID, "client ID of the registered app")
	clientSecret := flags.String("client-secret", defaultClientSecret, "client secret of the registered app")
	lifetime := flags.Duration("lifetime", entratest.DefaultTokenLifetime, "lifetime of issued tokens")
	clientCert := flags.String("client-cert", "", "PEM certificate to register as a certificate credential of -client-id")
	managedIdentity := flags.String("managed-identity", "", "client ID of a system-assigned managed identity to serve")
	identityHeader := flags.String("identity-header", defaultIdentityHdr, "X-IDENTITY-HEADER secret of the App Service managed identity endpoint")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if flags.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", flags.Args())
	}
	if *clientID == "" || *clientSecret == "" {
		return errors.New("-client-id and -client-secret must not be empty")
	}
	if *lifetime < time.Second {
		return errors.New("-lifetime must be at least 1s")
	}

	emulator, err := entratest.New(entratest.Options{TenantID: *tenant, TokenLifetime: *lifetime})
	if err != nil {
		return err
	}
	emulator.AddClient(*clientID, *clientSecret)
	var certThumbprint string
	if *clientCert != "" {
		cert, err := readCertificate(*clientCert)
		if err != nil {
			return err
		}
		emulator.AddCertificateClient(*clientID, cert)
		sum := sha256.Sum256(cert.Raw)
		certThumbprint = base64.RawURLEncoding.EncodeToString(sum[:])
	}
	if *managedIdentity != "" {
		if *identityHeader == "" {
			return errors.New("-identity-header must not be empty")
		}
		emulator.AddManagedIdentity(*managedIdentity, true)
		emulator.SetIdentityHeader(*identityHeader)
	}

	listener, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	baseURL := "http://" + listener.Addr().String()
	fmt.Fprintf(stdout, "entra-emulator listening on %s\n", baseURL)
	fmt.Fprintf(stdout, "tenant:         %s\n", emulator.TenantID())
	fmt.Fprintf(stdout, "token endpoint: %s%s\n", baseURL, emulator.TokenPath())
	fmt.Fprintf(stdout, "token lifetime: %s\n\n", *lifetime)
	fmt.Fprintf(stdout, "export ENTRA_AUTHORITY_HOST=%s\n", baseURL)
	fmt.Fprintf(stdout, "export ENTRA_TENANT_ID=%s\n", emulator.TenantID())
	fmt.Fprintf(stdout, "export ENTRA_CLIENT_ID=%s\n", *clientID)
	fmt.Fprintf(stdout, "export ENTRA_CLIENT_SECRET=%s\n", *clientSecret)
	if certThumbprint != "" {
		fmt.Fprintf(stdout, "\nclient certificate registered for %s: x5t#S256 %s\n", *clientID, certThumbprint)
	}
	if *managedIdentity != "" {
		fmt.Fprintf(stdout, "\nmanaged identity %s (system-assigned):\n", *managedIdentity)
		fmt.Fprintf(stdout, "IMDS endpoint: %s%s\n", baseURL, entratest.IMDSPath)
		fmt.Fprintf(stdout, "export IDENTITY_ENDPOINT=%s%s\n", baseURL, entratest.AppServicePath)
		fmt.Fprintf(stdout, "export IDENTITY_HEADER=%s\n", *identityHeader)
	}

	server := &http.Server{
		Handler:           emulator,
		ConnState:         emulator.ConnState,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(stderr, "entra-emulator: ", log.LstdFlags),
	}
	served := make(chan error, 1)
	go func() { served <- server.Serve(listener) }()
	if ready != nil {
		ready <- listener.Addr()
	}

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := server.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutting down: %w", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	fmt.Fprintf(stdout, "entra-emulator stopped after %d token requests (%d tokens issued) on %d connections\n",
		emulator.TokenRequests(), emulator.IssuedTokens(), emulator.Connections())
	return nil
}

// readCertificate reads the first certificate of a PEM file.
func readCertificate(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading -client-cert: %w", err)
	}
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, fmt.Errorf("-client-cert %s holds no PEM certificate", path)
		}
		if block.Type == "CERTIFICATE" {
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parsing -client-cert: %w", err)
			}
			return cert, nil
		}
	}
}
