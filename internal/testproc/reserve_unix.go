//go:build unix && !solaris && !aix

package testproc

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
)

// reservedPorts keeps the reservation files open (and so locked) for the
// life of the process.
var reservedPorts struct {
	sync.Mutex
	files []*os.File
}

// reservePort takes port's reservation file lock, without waiting; false if
// another FreePort holds it.
func reservePort(t testing.TB, port int) bool {
	dir := filepath.Join(os.TempDir(), "caddy-entra-test-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		t.Fatalf("reserving a port: %v", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, fmt.Sprint(port)), os.O_CREATE|os.O_RDONLY, 0o666)
	if err != nil {
		t.Fatalf("reserving a port: %v", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if err == syscall.EWOULDBLOCK {
			return false
		}
		t.Fatalf("reserving a port: %v", err)
	}
	reservedPorts.Lock()
	reservedPorts.files = append(reservedPorts.files, f)
	reservedPorts.Unlock()
	return true
}
