package testproc

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"testing"
)

var holdRuns int

// TestAPortReservedByAnotherProcessIsNotHandedOut runs this test binary again
// as a second test process that reserves a port, the way two packages' tests
// run side by side under `go test ./...`.
func TestAPortReservedByAnotherProcessIsNotHandedOut(t *testing.T) {
	if port := os.Getenv("TESTPROC_HOLD_PORT"); port != "" {
		n, _ := strconv.Atoi(port)
		if !reservePort(t, n) {
			t.Fatal("the port was reserved already")
		}
		fmt.Println("held")
		io.Copy(io.Discard, os.Stdin) // until the parent closes stdin
		return
	}
	// A number above every port, new at each run: no FreePort of any
	// process reserves it.
	holdRuns++
	port := 1<<16 + os.Getpid()<<4 + holdRuns
	child := exec.Command(os.Args[0], "-test.run=^TestAPortReservedByAnotherProcessIsNotHandedOut$")
	child.Env = append(os.Environ(), "TESTPROC_HOLD_PORT="+strconv.Itoa(port))
	stdin, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	if line, _ := bufio.NewReader(stdout).ReadString('\n'); line != "held\n" {
		stdin.Close()
		child.Wait()
		t.Fatalf("the other process did not reserve the port: %q", line)
	}
	if reservePort(t, port) {
		t.Error("a port another process holds was reserved here too")
	}
	stdin.Close()
	if err := child.Wait(); err != nil {
		t.Fatalf("the other process: %v", err)
	}
	if !reservePort(t, port) {
		t.Error("a port was still reserved after the process that held it exited")
	}
	if reservePort(t, port) {
		t.Error("a port this process holds was reserved again")
	}
}
