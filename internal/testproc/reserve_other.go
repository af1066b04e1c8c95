//go:build !unix || solaris || aix

package testproc

import (
	"sync"
	"testing"
)

// reserved holds the ports reservePort took in this process: where
// syscall has no flock, other processes' are not seen.
var reserved = struct {
	sync.Mutex
	ports map[int]bool
}{ports: make(map[int]bool)}

// reservePort takes port for this process; false if it took it before.
func reservePort(_ testing.TB, port int) bool {
	reserved.Lock()
	defer reserved.Unlock()
	if reserved.ports[port] {
		return false
	}
	reserved.ports[port] = true
	return true
}
