// Package testproc runs the child processes of the end-to-end tests (the
// Caddy binary, redis-server, Node.js) and waits for them: shared by the
// integration tests and the SDK tests' module. It is for tests only.
package testproc

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// FreePort returns a loopback TCP port that was free a moment ago and that
// no FreePort has handed out before, in this process or another one running
// now. The kernel may give a port it has just freed out again (1 pair in
// 20,000 measured here; 1 in 300 repeats one of the last 20), and `go test
// ./...` runs test processes side by side: two ports would be the same, and
// since Caddy listens with SO_REUSEPORT both listeners would bind it and
// split its connections (a replica's requests answered by its admin API, seen
// in CI). A port is reserved by an exclusive lock on a file named after it in
// the temporary directory, held until the process exits; an open file
// description's lock excludes every other one, in this process too (where
// syscall has no flock, ports are reserved in this process only).
func FreePort(t testing.TB) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("finding a free port: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if reservePort(t, port) {
			return port
		}
	}
	t.Fatal("finding a free port: the kernel offered only ports handed out before")
	return 0
}

// WaitFor polls check every 20 ms until it succeeds or timeout passes: for
// another process to come up, where no channel can tell.
func WaitFor(t testing.TB, what string, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// RequireTool finds a program on PATH. Without it the test is skipped,
// except under CI=true, where it fails: CI installs what the tests need.
// install says how to get it.
func RequireTool(t testing.TB, name, install string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found on PATH under CI=true (%s): %v", name, install, err)
		}
		t.Skipf("%s not found on PATH (%s); skipping: %v", name, install, err)
	}
	return path
}

// Buffer is a goroutine-safe buffer for a child process's output.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Process is a child process whose output is kept for assertions; it is
// stopped when the test ends.
type Process struct {
	Cmd    *exec.Cmd
	Output *Buffer
	done   chan struct{}
}

// Start runs name with args, env added to this process's environment.
func Start(t testing.TB, env []string, name string, args ...string) *Process {
	t.Helper()
	p := &Process{Output: new(Buffer), done: make(chan struct{})}
	p.Cmd = exec.Command(name, args...)
	p.Cmd.Env = append(os.Environ(), env...)
	p.Cmd.Stdout, p.Cmd.Stderr = p.Output, p.Output
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		_ = p.Cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.Stop(t) })
	return p
}

// Stop sends SIGTERM, then SIGKILL if the process does not exit in 10 s.
func (p *Process) Stop(t testing.TB) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Logf("%s did not stop on SIGTERM; killing it", p.Cmd.Path)
		_ = p.Cmd.Process.Kill()
		<-p.done
	}
}

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// RunWithCaddy builds the repository's Caddy main (cmd/caddy, from
// repoRoot, in the main module as users build it) into a temporary
// directory, sets *binary to its path, runs the tests and exits with their
// code. It is a TestMain body.
func RunWithCaddy(m *testing.M, repoRoot string, binary *string) {
	dir, err := os.MkdirTemp("", "entra-caddy-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "making temp dir:", err)
		os.Exit(1)
	}
	*binary = filepath.Join(dir, "caddy")
	build := exec.Command("go", "build", "-o", *binary, "./cmd/caddy")
	build.Dir = repoRoot
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building cmd/caddy:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// StartRedis starts redis-server on a free loopback port with no
// persistence (args are added to its command line) and waits until it
// answers PING. It is skipped without redis-server on PATH, except under
// CI=true (see RequireTool).
func StartRedis(t testing.TB, args ...string) (addr string, proc *Process) {
	t.Helper()
	path := RequireTool(t, "redis-server", "apt-get install redis-server")
	port := FreePort(t)
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	proc = Start(t, nil, path, append([]string{"--port", fmt.Sprint(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", t.TempDir()}, args...)...)
	WaitFor(t, "redis-server on "+addr, 10*time.Second, func() error {
		if proc.Exited() {
			return fmt.Errorf("redis-server exited: %s", proc.Output.String())
		}
		return PingRedis(addr)
	})
	return addr, proc
}

// PingRedis sends PING to the Redis at addr and checks the answer.
func PingRedis(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	reply := make([]byte, 7)
	n, err := conn.Read(reply)
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(reply[:n], []byte("+PONG")) {
		return fmt.Errorf("unexpected PING reply %q", reply[:n])
	}
	return nil
}
