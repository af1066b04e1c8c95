package handoff

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// gatedHook is a ConnState hook that stops the old server between reading a
// request header and its shutdown check (where net/http reports
// StateActive) until the test opens the gate, then calls inner.
type gatedHook struct {
	active chan struct{} // closed when the server has read the header
	gate   chan struct{} // the test closes it to let the server go on
	inner  func(net.Conn, http.ConnState)
}

func newGatedHook(inner func(net.Conn, http.ConnState)) *gatedHook {
	return &gatedHook{active: make(chan struct{}), gate: make(chan struct{}), inner: inner}
}

func (h *gatedHook) hook(c net.Conn, s http.ConnState) {
	if s == http.StateActive {
		close(h.active)
		<-h.gate
	}
	if h.inner != nil {
		h.inner(c, s)
	}
}

// hidden wraps a connection the way Caddy's http2Conn does: the *conn is
// reachable only by its addresses.
type hidden struct{ net.Conn }

func hiddenConnState(c net.Conn, s http.ConnState) { ConnState(hidden{c}, s) }

// TestARequestReadAsAReloadBeginsIsAnsweredByTheNewServer is the race the
// connection alone cannot settle: the old server has read a request with a
// body when the new server starts, and its shutdown check comes after its
// Shutdown began. ConnState holds it there until the View closes, so
// net/http drops it unanswered and the new server answers it.
func TestARequestReadAsAReloadBeginsIsAnsweredByTheNewServer(t *testing.T) {
	for _, tc := range []struct {
		name string
		hook func(net.Conn, http.ConnState)
	}{
		{"the server's own connection", ConnState},
		{"behind a wrapper that hides it", hiddenConnState},
	} {
		t.Run(tc.name, func(t *testing.T) {
			address := freeAddress(t)
			gated := newGatedHook(tc.hook)
			old := serveWithHook(t, address, "old", nil, gated.hook)
			c := dial(t, address)
			c.send("POST", "/", "ping")
			<-gated.active
			serve(t, address, "new", nil)
			close(gated.gate) // held now: the old View is superseded, not closed
			done := old.shutdown()
			_, body, err := c.response()
			if err != nil || body != "new ping" {
				t.Fatalf("answer %q, err %v; want the new server's", body, err)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if n := old.view.HandedOff(); n != 1 {
				t.Errorf("handed off %d connections, want 1", n)
			}
		})
	}
}

// TestWithoutTheHookTheSameRequestIsLost is the control: the same sequence
// on a server without ConnState loses the request (the package doc's known
// gap), so the hook is what answers it.
func TestWithoutTheHookTheSameRequestIsLost(t *testing.T) {
	address := freeAddress(t)
	gated := newGatedHook(nil)
	old := serveWithHook(t, address, "old", nil, gated.hook)
	c := dial(t, address)
	c.send("POST", "/", "ping")
	<-gated.active
	serve(t, address, "new", nil)
	done := old.shutdown() // Shutdown has begun before the check
	close(gated.gate)
	if _, body, err := c.response(); err == nil {
		t.Fatalf("answered %q; without the hook this request is dropped, and the test no longer shows the hook's use", body)
	}
	<-done
}

func TestAHeldRequestIsServedByItsServerWhenTheReloadFails(t *testing.T) {
	address := freeAddress(t)
	gated := newGatedHook(ConnState)
	old := serveWithHook(t, address, "old", nil, gated.hook)
	c := dial(t, address)
	c.send("POST", "/", "ping")
	<-gated.active
	next := serve(t, address, "new", nil)
	close(gated.gate)
	<-next.shutdown() // the new config fails to start: its View closes first
	_, body, err := c.response()
	if err != nil || body != "old ping" {
		t.Fatalf("answer %q, err %v; want the old server's", body, err)
	}
	_ = old
}

func TestAHeldRequestIsServedByItsServerAfterTheHoldLimit(t *testing.T) {
	defer func(limit time.Duration) { holdLimit = limit }(holdLimit)
	holdLimit = 10 * time.Millisecond // as when shutdown_delay keeps the old server up
	address := freeAddress(t)
	gated := newGatedHook(ConnState)
	old := serveWithHook(t, address, "old", nil, gated.hook)
	c := dial(t, address)
	c.send("POST", "/", "ping")
	<-gated.active
	serve(t, address, "new", nil)
	close(gated.gate)
	_, body, err := c.response()
	if err != nil || body != "old ping" {
		t.Fatalf("answer %q, err %v; want the old server's", body, err)
	}
	<-old.shutdown()
}

// TestANextRequestBegunBeforeItsResponseWasMarkedFinishedMoves: a client
// sends its next request as soon as it has a whole response, and net/http's
// background read may get its first byte before net/http marks the response
// finished. That read is not a pipelined request: the connection, idle with
// a request begun, still moves to the new server.
func TestANextRequestBegunBeforeItsResponseWasMarkedFinishedMoves(t *testing.T) {
	address := freeAddress(t)
	var held *conn
	sent := make(chan struct{})
	old := serve(t, address, "old", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body) // its EOF starts net/http's background read
		w.Header().Set("Content-Length", "4")
		io.WriteString(w, "done")
		w.(http.Flusher).Flush() // the whole response leaves
		<-sent
		waitFor(t, func() bool { // the background read got the next request's first byte
			held.mu.Lock()
			defer held.mu.Unlock()
			return string(held.pending) == "P"
		})
	}))
	c := dial(t, address)
	held = lookup(<-old.fresh)
	c.send("POST", "/x/first", "ping")
	if _, body, err := c.response(); err != nil || body != "done" {
		t.Fatalf("first answer %q, err %v", body, err)
	}
	io.WriteString(c.conn, "P")
	close(sent)
	<-old.idle // waiting for the rest of the request
	serve(t, address, "new", nil)
	if err := <-old.shutdown(); err != nil {
		t.Fatal(err)
	}
	io.WriteString(c.conn, "OST / HTTP/1.1\r\nHost: test\r\nContent-Length: 4\r\n\r\npong")
	if _, body, err := c.response(); err != nil || body != "new pong" {
		t.Fatalf("answer %q, err %v; want the new server's", body, err)
	}
}

// waitFor polls cond, for what no event reports, and fails after 5 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5 s")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestABodyReadAfterItsResponseIsNeverTakenForARequest: bytes of a request
// body read once its response has begun are the body, whatever they look
// like; a body that spells a request is never handed to a new server.
func TestABodyReadAfterItsResponseIsNeverTakenForARequest(t *testing.T) {
	address := freeAddress(t)
	smuggled := "GET /x/smuggled HTTP/1.1\r\nHost: test\r\n\r\n"
	bodyRead := make(chan string, 1)
	old := serve(t, address, "old", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// As Caddy's enable_full_duplex: net/http then does not read the
		// body before the response header.
		if err := http.NewResponseController(w).EnableFullDuplex(); err != nil {
			t.Error(err)
		}
		w.Header().Set("Content-Length", "4")
		io.WriteString(w, "done")
		w.(http.Flusher).Flush() // the whole response leaves before the body is read
		body, _ := io.ReadAll(r.Body)
		bodyRead <- string(body)
	}))
	c := dial(t, address)
	fmt.Fprintf(c.conn, "POST /x/first HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n", len(smuggled))
	if _, body, err := c.response(); err != nil || body != "done" {
		t.Fatalf("first answer %q, err %v", body, err)
	}
	io.WriteString(c.conn, smuggled)
	if got := <-bodyRead; got != smuggled {
		t.Fatalf("the handler read %q", got)
	}
	<-old.idle
	serve(t, address, "new", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("the new server got %s %s, a body the old server had read", r.Method, r.URL.Path)
	}))
	if err := <-old.shutdown(); err != nil {
		t.Fatal(err)
	}
	c.mustGet("/", "new ping") // the connection moved, with nothing replayed
}

// TestARequestNotYetActiveWhenShutdownClosesItsConnectionIsReplayed plays
// net/http's part by hand at the instant it cannot be paused from outside:
// its read has returned a whole request but it has not reported the
// connection active yet, so Shutdown closes it as idle. Such a request was
// never served (net/http reports StateActive before it serves one) and
// goes to the new server; once reported active, it is not replayed.
func TestARequestNotYetActiveWhenShutdownClosesItsConnectionIsReplayed(t *testing.T) {
	for _, tc := range []struct {
		name         string
		reportActive bool
		want         string // "" for no answer
	}{
		{"not yet active", false, "new ping"},
		{"already active", true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			address := freeAddress(t)
			old, err := Listen(context.Background(), "tcp", address, net.ListenConfig{})
			if err != nil {
				t.Fatal(err)
			}
			c := dial(t, address)
			accepted, err := old.Accept()
			if err != nil {
				t.Fatal(err)
			}
			ConnState(accepted, http.StateNew)
			c.send("POST", "/", "ping")
			buf := make([]byte, 4096)
			if _, err := io.ReadAtLeast(accepted, buf, len("POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 4\r\n\r\nping")); err != nil {
				t.Fatal(err)
			}
			if tc.reportActive {
				ConnState(accepted, http.StateActive) // the old View is the newest: no hold
			}
			serve(t, address, "new", nil)
			old.Close()      // Shutdown closes the listeners,
			accepted.Close() // then the connections it sees as idle
			_, body, err := c.response()
			if tc.want == "" {
				if err == nil {
					t.Fatalf("answered %q; a request reported active may have been served, it must not be replayed", body)
				}
				return
			}
			if err != nil || body != tc.want {
				t.Fatalf("answer %q, err %v; want %q", body, err, tc.want)
			}
		})
	}
}
