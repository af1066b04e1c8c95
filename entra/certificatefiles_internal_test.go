package entra

import (
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
)

// Every path that reads the certificate files, CredentialFingerprint's
// included, calls onChange when it takes new content, exactly once per
// change: a mutual TLS identity never presents a rotated certificate's
// predecessor on a connection kept alive past the rotation.
func TestEveryReloadThatTakesNewContentCallsOnChange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "client.pem")
	write := func(content string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("one")
	f, err := loadCertificateFiles(CertificateCredential{CertFile: path},
		func(certData, _ []byte, _ CertificateCredential) (string, error) { return string(certData), nil }, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	changes := 0
	f.onChange = func() { changes++ }
	f.fingerprint()
	f.reload()
	if changes != 0 {
		t.Fatalf("%d changes before any rotation", changes)
	}

	write("two")
	f.fingerprint() // the path CredentialFingerprint takes
	if changes != 1 || f.last() != "two" {
		t.Fatalf("after a rotation seen by fingerprint: %d changes, value %q; want 1, two", changes, f.last())
	}
	f.reload()
	f.fingerprint()
	if changes != 1 {
		t.Fatalf("%d changes without a new rotation, want 1", changes)
	}

	write("three")
	if v := f.reload(); v != "three" || changes != 2 {
		t.Fatalf("after a rotation seen by reload: %d changes, value %q; want 2, three", changes, v)
	}
}

// A reload that finds new content already taken returns only after the
// reload that took it has run onChange: a token request made after the
// rotation was read never sends through the transport it retires.
func TestAReloadWaitsForTheOnChangeOfTheNewContent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "client.pem")
	if err := os.WriteFile(path, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := loadCertificateFiles(CertificateCredential{CertFile: path},
		func(certData, _ []byte, _ CertificateCredential) (string, error) { return string(certData), nil }, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	inOnChange, release := make(chan struct{}), make(chan struct{})
	var changed atomic.Bool
	f.onChange = func() {
		close(inOnChange)
		<-release
		changed.Store(true)
	}
	if err := os.WriteFile(path, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	go f.reload() // takes "two" and waits in onChange
	<-inOnChange
	second := make(chan bool)
	go func() {
		f.reload()
		second <- changed.Load()
	}()
	select {
	case <-second:
		t.Fatal("a reload returned while the reload that took the new content was still in onChange")
	case <-time.After(100 * time.Millisecond): // it waits, as it should
	}
	close(release)
	if !<-second {
		t.Error("the second reload returned before onChange had run")
	}
}
