package handoff

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// gate pauses a server where net/http reports a state (StateActive: between
// reading a request header and its shutdown check) until the test opens it.
type gate struct {
	state   http.ConnState
	once    sync.Once
	reached chan struct{} // closed when the server is paused there
	open    chan struct{} // the test closes it to let the server go on
}

func newGate(state http.ConnState) *gate {
	return &gate{state: state, reached: make(chan struct{}), open: make(chan struct{})}
}

// wrap is a serverOptions.wrap that pauses at g's state, then calls hook.
func (g *gate) wrap(hook func(net.Conn, http.ConnState)) func(net.Conn, http.ConnState) {
	return func(c net.Conn, s http.ConnState) {
		if s == g.state {
			g.once.Do(func() { close(g.reached); <-g.open }) // the first report only
		}
		if hook != nil {
			hook(c, s)
		}
	}
}

// embedding hides a connection the way Caddy's h2c wrapper does: in an
// exported embedded field.
type embedding struct{ net.Conn }

// rawWrapper hides a connection the way the PROXY protocol wrapper does:
// behind Raw.
type rawWrapper struct{ inner net.Conn }

func (w *rawWrapper) Raw() net.Conn                      { return w.inner }
func (w *rawWrapper) Read(p []byte) (int, error)         { return w.inner.Read(p) }
func (w *rawWrapper) Write(p []byte) (int, error)        { return w.inner.Write(p) }
func (w *rawWrapper) Close() error                       { return w.inner.Close() }
func (w *rawWrapper) LocalAddr() net.Addr                { return w.inner.LocalAddr() }
func (w *rawWrapper) RemoteAddr() net.Addr               { return w.inner.RemoteAddr() }
func (w *rawWrapper) SetDeadline(t time.Time) error      { return w.inner.SetDeadline(t) }
func (w *rawWrapper) SetReadDeadline(t time.Time) error  { return w.inner.SetReadDeadline(t) }
func (w *rawWrapper) SetWriteDeadline(t time.Time) error { return w.inner.SetWriteDeadline(t) }

// TestARequestReadAsAReloadBeginsIsAnsweredByTheNewServer is the race the
// connection alone cannot settle: the old server has read a request with a
// body when the new server starts, and its shutdown check comes after its
// Shutdown began. The hooks hold it there until that Shutdown begins, so
// net/http drops it unanswered and the new server answers it.
func TestARequestReadAsAReloadBeginsIsAnsweredByTheNewServer(t *testing.T) {
	for _, tc := range []struct {
		name string
		hide func(net.Conn) net.Conn
	}{
		{"the server's own connection", func(c net.Conn) net.Conn { return c }},
		{"behind an embedding wrapper", func(c net.Conn) net.Conn { return embedding{c} }},
		{"behind a Raw wrapper", func(c net.Conn) net.Conn { return &rawWrapper{c} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			address := freeAddress(t)
			paused := newGate(http.StateActive)
			old := serveWith(t, address, "old", nil, serverOptions{wrap: func(hook func(net.Conn, http.ConnState)) func(net.Conn, http.ConnState) {
				return paused.wrap(func(c net.Conn, s http.ConnState) { hook(tc.hide(c), s) })
			}})
			c := dial(t, address)
			c.send("POST", "/", "ping")
			<-paused.reached
			serve(t, address, "new", nil)
			close(paused.open) // held now: the old View is superseded, its server not stopped
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

func TestAHeldRequestIsServedByItsServerWhenTheReloadFails(t *testing.T) {
	address := freeAddress(t)
	paused := newGate(http.StateActive)
	serveWith(t, address, "old", nil, serverOptions{wrap: paused.wrap})
	c := dial(t, address)
	c.send("POST", "/", "ping")
	<-paused.reached
	next := serve(t, address, "new", nil)
	close(paused.open)
	<-next.shutdown() // the new config fails to start: its View closes first
	_, body, err := c.response()
	if err != nil || body != "old ping" {
		t.Fatalf("answer %q, err %v; want the old server's", body, err)
	}
}

func TestAHeldRequestIsServedByItsServerAfterTheHoldLimit(t *testing.T) {
	defer func(limit time.Duration) { holdLimit = limit }(holdLimit)
	holdLimit = 10 * time.Millisecond // as when shutdown_delay keeps the old server up
	address := freeAddress(t)
	paused := newGate(http.StateActive)
	old := serveWith(t, address, "old", nil, serverOptions{wrap: paused.wrap})
	c := dial(t, address)
	c.send("POST", "/", "ping")
	<-paused.reached
	serve(t, address, "new", nil)
	close(paused.open)
	_, body, err := c.response()
	if err != nil || body != "old ping" {
		t.Fatalf("answer %q, err %v; want the old server's", body, err)
	}
	<-old.shutdown()
}

// TestANextRequestBegunBeforeItsResponseWasReportedFinishedMoves: a client
// sends its next request as soon as it has a whole response, and net/http's
// background read may get its first byte before net/http reports the
// connection idle. That read is not a pipelined request: once net/http
// reports the connection idle, it moves to the new server.
func TestANextRequestBegunBeforeItsResponseWasReportedFinishedMoves(t *testing.T) {
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
	held = unwrap(<-old.fresh)
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

const smuggled = "GET /x/smuggled HTTP/1.1\r\nHost: test\r\n\r\n"

// refuseSmuggled is a new server's /x/ handler that fails the test if a
// request reaches it.
func refuseSmuggled(t *testing.T) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("the new server got %s %s, a body the old server had read", r.Method, r.URL.Path)
	})
}

// TestABodyReadAfterItsResponseIsNeverTakenForARequest: bytes of a request
// body read once its response has begun are the body, whatever they look
// like and however its length is written; a body that spells a request is
// never handed to a new server.
func TestABodyReadAfterItsResponseIsNeverTakenForARequest(t *testing.T) {
	for _, tc := range []struct {
		name, lengthHeader string
		noHooks            bool
	}{
		{"Content-Length", fmt.Sprintf("Content-Length: %d\r\n", len(smuggled)), false},
		{"Content-Length, server without hooks", fmt.Sprintf("Content-Length: %d\r\n", len(smuggled)), true},
		// net/http joins a folded line to the field before: a length the
		// connection's own scan of the header does not see.
		{"folded Content-Length", fmt.Sprintf("Content-Length:\r\n %d\r\n", len(smuggled)), false},
		{"folded Content-Length, server without hooks", fmt.Sprintf("Content-Length:\r\n %d\r\n", len(smuggled)), true},
		{"chunked, server without hooks", "Transfer-Encoding: chunked\r\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			address := freeAddress(t)
			bodyRead := make(chan string, 1)
			old := serveWith(t, address, "old", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				// As Caddy's enable_full_duplex: net/http then does not read
				// the body before the response header.
				if err := http.NewResponseController(w).EnableFullDuplex(); err != nil {
					t.Error(err)
				}
				w.Header().Set("Content-Length", "4")
				io.WriteString(w, "done")
				w.(http.Flusher).Flush() // the whole response leaves before the body is read
				body, _ := io.ReadAll(r.Body)
				bodyRead <- string(body)
			}), serverOptions{noHooks: tc.noHooks})
			c := dial(t, address)
			io.WriteString(c.conn, "POST /x/first HTTP/1.1\r\nHost: test\r\n"+tc.lengthHeader+"\r\n")
			if _, body, err := c.response(); err != nil || body != "done" {
				t.Fatalf("first answer %q, err %v", body, err)
			}
			body := smuggled
			if tc.lengthHeader == "Transfer-Encoding: chunked\r\n" {
				body = fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(smuggled), smuggled)
			}
			io.WriteString(c.conn, body)
			if got := <-bodyRead; got != smuggled {
				t.Fatalf("the handler read %q", got)
			}
			<-old.idle
			serve(t, address, "new", refuseSmuggled(t))
			if err := <-old.shutdown(); err != nil {
				t.Fatal(err)
			}
			// The connection moved with nothing replayed, or was closed.
			c.send("POST", "/", "ping")
			if _, body, err := c.response(); err == nil && body != "new ping" {
				t.Fatalf("answer %q", body)
			}
		})
	}
}

// streamingHandler streams a response in full duplex and clears its write
// deadline, as a long stream does, then reads the whole body, sends it to
// bodyRead, and runs then (when set).
func streamingHandler(bodyRead chan<- string, then func()) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		rc.EnableFullDuplex()
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "streaming")
		rc.Flush()
		rc.SetWriteDeadline(time.Time{})
		body, _ := io.ReadAll(r.Body)
		bodyRead <- string(body)
		if then != nil {
			then()
		}
	})
}

// TestAHandlerClearingItsWriteDeadlineDoesNotFinishItsResponse: handlers
// clear their write deadline to stream (ResponseController), which looks
// like net/http finishing a response; the body they read after it is still
// the body.
func TestAHandlerClearingItsWriteDeadlineDoesNotFinishItsResponse(t *testing.T) {
	address := freeAddress(t)
	bodyRead, release := make(chan string, 1), make(chan struct{})
	old := serve(t, address, "old", streamingHandler(bodyRead, func() {
		<-release
		panic(http.ErrAbortHandler)
	}))
	c := dial(t, address)
	hc := unwrap(<-old.fresh)
	fmt.Fprintf(c.conn, "POST /x/first HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n", len(smuggled))
	waitFor(t, func() bool { hc.mu.Lock(); defer hc.mu.Unlock(); return hc.writes > 0 })
	io.WriteString(c.conn, smuggled)
	if got := <-bodyRead; got != smuggled {
		t.Fatalf("read %q", got)
	}
	hc.mu.Lock()
	before := hc.dataRead
	hc.mu.Unlock()
	io.WriteString(c.conn, "G") // a next request begins; the background read gets it
	waitFor(t, func() bool {
		hc.mu.Lock()
		defer hc.mu.Unlock()
		return !hc.reading && hc.dataRead > before
	})
	serve(t, address, "new", refuseSmuggled(t))
	done := old.shutdown()
	close(release)
	<-done
	if n := old.view.HandedOff(); n != 0 {
		t.Errorf("handed off %d connections whose handler aborted", n)
	}
}

// TestARequestAHijackerServedIsNeverReplayed: a handler that hijacks the
// connection may answer and read further requests itself; net/http reports
// nothing of them, so none is ever handed to another server.
func TestARequestAHijackerServedIsNeverReplayed(t *testing.T) {
	address := freeAddress(t)
	var served atomic.Int32
	actedOn, release := make(chan struct{}), make(chan struct{})
	old := serve(t, address, "old", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		next, err := http.ReadRequest(brw.Reader)
		if err != nil {
			t.Error(err)
			return
		}
		io.ReadAll(next.Body)
		served.Add(1) // the hijacker acts on the request
		close(actedOn)
		<-release
		conn.Close() // then gives up without answering
	}))
	c := dial(t, address)
	c.send("GET", "/x/hijack", "")
	if _, body, err := c.response(); err != nil || body != "ok" {
		t.Fatalf("hijacker's answer %q, %v", body, err)
	}
	c.send("POST", "/x/pay", "once")
	<-actedOn
	serve(t, address, "new", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		io.WriteString(w, "new")
	}))
	done := old.shutdown()
	close(release)
	<-done
	if _, _, err := c.response(); err == nil {
		t.Error("the hijacked connection got an answer after its hijacker closed it")
	}
	if n := served.Load(); n != 1 {
		t.Errorf("POST /x/pay served %d times", n)
	}
}

// TestAnAbortedChunkedResponseWhoseDataLooksFinishedIsNeverHandedOff: a
// chunk whose data ends in "0\r\n" makes the response's last bytes those of
// a chunked body's end; a pipelined request's first byte then arrives and
// the handler aborts during a reload. Only net/http's idle report finishes a
// response, so the connection is closed, not handed off mid-response.
func TestAnAbortedChunkedResponseWhoseDataLooksFinishedIsNeverHandedOff(t *testing.T) {
	address := freeAddress(t)
	var hc *conn
	flushed, piped, release := make(chan struct{}), make(chan struct{}), make(chan struct{})
	old := serve(t, address, "old", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "x0\r\n") // chunked: "4\r\nx0\r\n\r\n"
		w.(http.Flusher).Flush()
		close(flushed)
		<-piped
		waitFor(t, func() bool { hc.mu.Lock(); defer hc.mu.Unlock(); return string(hc.pending) == "G" })
		<-release
		panic(http.ErrAbortHandler) // as reverse_proxy when its upstream fails mid-body
	}))
	c := dial(t, address)
	hc = unwrap(<-old.fresh)
	c.send("GET", "/x/chunk", "")
	<-flushed
	want, got := []byte("4\r\nx0\r\n\r\n"), []byte(nil)
	for !bytes.HasSuffix(got, want) {
		b, err := c.r.ReadByte()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, b)
	}
	io.WriteString(c.conn, "GET / HTTP/1.1\r\nHost: test\r\n\r\n")
	close(piped)
	serve(t, address, "new", nil)
	done := old.shutdown()
	close(release)
	rest, _ := io.ReadAll(c.r)
	<-done
	if n := old.view.HandedOff(); n != 0 || len(rest) > 0 {
		t.Errorf("handed off %d; after the truncated chunked body the client read %q", n, rest)
	}
}

// readByHand plays net/http's part on a View of address: it accepts a
// connection, reports it new to a fresh ServerHooks and reads a whole
// "POST / ping" the client sends on it.
func readByHand(t *testing.T, address string) (*View, *ServerHooks, *client, net.Conn) {
	t.Helper()
	view, err := Listen(context.Background(), "tcp", address, net.ListenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { view.Close() })
	hooks := NewServerHooks()
	c := dial(t, address)
	accepted, err := view.Accept()
	if err != nil {
		t.Fatal(err)
	}
	hooks.ConnState(accepted, http.StateNew)
	c.send("POST", "/", "ping")
	if _, err := io.ReadAtLeast(accepted, make([]byte, 4096), len("POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 4\r\n\r\nping")); err != nil {
		t.Fatal(err)
	}
	return view, hooks, c, accepted
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
			old, hooks, c, accepted := readByHand(t, address)
			if tc.reportActive {
				hooks.ConnState(accepted, http.StateActive) // the old View is the newest: no hold
			}
			serve(t, address, "new", nil)
			old.Close()           // Shutdown closes the listeners,
			hooks.ShutdownBegun() // runs its hooks,
			accepted.Close()      // and closes the connections it sees as idle
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

// TestAClosedViewIsNoProofOfShutdown: a View closed while its server goes
// on (its Serve returned on an accept error) does not make a request read
// and not yet active replayable: only the server's Shutdown does.
func TestAClosedViewIsNoProofOfShutdown(t *testing.T) {
	defer func(grace time.Duration) { handoffGrace = grace }(handoffGrace)
	handoffGrace = 10 * time.Millisecond
	address := freeAddress(t)
	old, _, c, accepted := readByHand(t, address)
	serve(t, address, "new", nil)
	old.Close()
	accepted.Close() // no ShutdownBegun
	if _, body, err := c.response(); err == nil {
		t.Fatalf("answered %q without proof that the old server stopped", body)
	}
}

// TestCloseReturnsBeforeTheProofThatItsServerStopped: net/http closes
// idle connections holding its server's lock (closeIdleConns), and the
// proof that the server gave a connection up at a boundary (its Shutdown
// hooks run, its View closed) may come an instant later. Close returns at
// once and hands the connection off when the proof comes.
func TestCloseReturnsBeforeTheProofThatItsServerStopped(t *testing.T) {
	defer func(grace time.Duration) { handoffGrace = grace }(handoffGrace)
	handoffGrace = time.Minute // a Close that waited for the proof would block that long
	for _, tc := range []struct {
		name string
		// exchange finishes the exchange on the old server's connection.
		exchange func(hooks *ServerHooks, accepted net.Conn, c *client)
		// prove gives the proof that the old server stopped.
		prove func(old *View, hooks *ServerHooks)
	}{
		{
			"a request not yet active, until the Shutdown hooks run",
			func(*ServerHooks, net.Conn, *client) {},
			func(old *View, hooks *ServerHooks) { hooks.ShutdownBegun() },
		},
		{
			"after a whole keep-alive response, until its View closes",
			func(hooks *ServerHooks, accepted net.Conn, c *client) {
				hooks.ConnState(accepted, http.StateActive)
				io.WriteString(accepted, "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nold ping")
				hooks.ConnState(accepted, http.StateIdle)
				if _, body, err := c.response(); err != nil || body != "old ping" {
					t.Fatalf("first answer %q, %v", body, err)
				}
			},
			func(old *View, hooks *ServerHooks) { old.Close() },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			address := freeAddress(t)
			old, hooks, c, accepted := readByHand(t, address)
			tc.exchange(hooks, accepted, c)
			serve(t, address, "new", nil)
			closed := make(chan struct{})
			go func() { accepted.Close(); close(closed) }()
			select {
			case <-closed:
			case <-time.After(5 * time.Second):
				t.Fatal("Close waits for the proof that its server stopped, as it would under net/http's lock")
			}
			tc.prove(old, hooks)
			c.mustGet("/", "new ping")
		})
	}
}

// TestAServerWithoutHooksNeverHandsOff: what a connection alone shows is
// not enough to hand it off safely (a handler clearing its write deadline
// to stream looks like a finished response); a server without ServerHooks
// keeps its connections, as on a plain listener.
func TestAServerWithoutHooksNeverHandsOff(t *testing.T) {
	address := freeAddress(t)
	bodyRead := make(chan string, 1)
	old := serveWith(t, address, "old", streamingHandler(bodyRead, nil), serverOptions{noHooks: true})
	c := dial(t, address)
	hc := unwrap(<-old.fresh)
	fmt.Fprintf(c.conn, "POST /x/first HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n", len(smuggled))
	waitFor(t, func() bool { hc.mu.Lock(); defer hc.mu.Unlock(); return hc.writes > 0 && hc.reading })
	serve(t, address, "new", refuseSmuggled(t)) // a reload begins
	io.WriteString(c.conn, smuggled)            // the rest of the body
	if got := <-bodyRead; got != smuggled || old.view.HandedOff() != 0 {
		t.Fatalf("the handler read %q, %d connections handed off; want the whole body and none", got, old.view.HandedOff())
	}

	dial(t, address).mustGet("/", "new ping") // new connections go to the new server
	<-old.shutdown()
	if n := old.view.HandedOff(); n != 0 {
		t.Errorf("a server without hooks handed off %d connections", n)
	}
}

// TestAServerWithoutHooksDropsARequestReadAfterItsShutdown: the case
// ServerHooks answer (see TestARequestReadAfterShutdownBeganIsAnsweredByTheNewServer)
// is, without them, lost as on a plain listener, never replayed.
func TestAServerWithoutHooksDropsARequestReadAfterItsShutdown(t *testing.T) {
	address := freeAddress(t)
	old := serveWith(t, address, "old", nil, serverOptions{noHooks: true})
	c := dial(t, address)
	<-old.fresh
	serve(t, address, "new", nil)
	done := old.shutdown()
	c.send("POST", "/", "ping")
	if _, body, err := c.response(); err == nil {
		t.Fatalf("answered %q", body)
	}
	<-done
	if n := old.view.HandedOff(); n != 0 {
		t.Errorf("a server without hooks handed off %d connections", n)
	}
}

// TestAPipelinedRequestBehindALargeRequestIsNeverMoved: a request whose
// unanswered bytes outgrow maxPending hides what was read behind it (a
// pipelined request, net/http holding its first byte); the connection is
// then never handed off, not even while a later request waits or is served.
func TestAPipelinedRequestBehindALargeRequestIsNeverMoved(t *testing.T) {
	t.Run("behind a large header", func(t *testing.T) {
		address := freeAddress(t)
		acting, release := make(chan struct{}), make(chan struct{})
		old := serve(t, address, "old", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/x/pay" {
				close(acting)
				<-release
			}
			io.WriteString(w, "old "+r.URL.Path)
		}))
		c := dial(t, address)
		hc := unwrap(<-old.fresh)
		big := fmt.Sprintf("GET /x/big HTTP/1.1\r\nHost: test\r\nX-Big: %s\r\n\r\n", strings.Repeat("h", maxPending+1000))
		io.WriteString(c.conn, big+"GET /x/pay HTTP/1.1\r\nHost: test\r\n\r\n")
		if _, body, err := c.response(); err != nil || body != "old /x/big" {
			t.Fatalf("first answer %q, err %v", body, err)
		}
		<-acting // GET /x/pay is being served from net/http's buffer
		serve(t, address, "new", nil)
		hc.mu.Lock()
		woken, closed := hc.woken, hc.closed
		hc.mu.Unlock()
		close(release)
		if woken || closed {
			t.Fatal("the connection was taken from its server while GET /x/pay was served")
		}
		if _, body, err := c.response(); err != nil || body != "old /x/pay" {
			t.Fatalf("GET /x/pay answered %q, err %v; want the old server's", body, err)
		}
	})
	t.Run("behind a large body", func(t *testing.T) {
		address := freeAddress(t)
		bodyDone, piped := make(chan struct{}), make(chan struct{})
		var hc *conn
		var bodyReads int // hc's reads with data once the body was read
		paused := newGate(http.StateIdle)
		old := serveWith(t, address, "old", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/x/big" {
				io.ReadAll(r.Body) // its EOF starts net/http's background read
				hc.mu.Lock()
				bodyReads = hc.dataRead
				hc.mu.Unlock()
				close(bodyDone)
				<-piped
				// The background read got the pipelined request's first byte
				// (kept nowhere: past maxPending nothing read is kept).
				waitFor(t, func() bool { hc.mu.Lock(); defer hc.mu.Unlock(); return hc.dataRead > bodyReads })
			}
			io.WriteString(w, "old "+r.URL.Path)
		}), serverOptions{wrap: paused.wrap})
		c := dial(t, address)
		hc = unwrap(<-old.fresh)
		fmt.Fprintf(c.conn, "POST /x/big HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n%s", maxPending+1000, strings.Repeat("b", maxPending+1000))
		<-bodyDone
		io.WriteString(c.conn, "GET /x/pay HTTP/1.1\r\nHost: test\r\n\r\n") // pipelined: net/http keeps its first byte
		close(piped)
		<-paused.reached // the first response is finished
		serve(t, address, "new", refuseSmuggled(t))
		close(paused.open)
		for _, want := range []string{"old /x/big", "old /x/pay"} {
			if _, body, err := c.response(); err != nil || body != want {
				t.Fatalf("answer %q, err %v; want %q", body, err, want)
			}
		}
		if n := old.view.HandedOff(); n != 0 {
			t.Errorf("handed off %d connections", n)
		}
	})
}

// TestWithoutANewerViewConnectionsCloseAtOnce: a server that closes its
// idle connections with no reload under way (keep-alives disabled, or the
// last config stopping) has nothing to hand them to and must not wait for
// its View to close: net/http does that under the server's lock.
func TestWithoutANewerViewConnectionsCloseAtOnce(t *testing.T) {
	address := freeAddress(t)
	g := serve(t, address, "only", nil)
	var conns []*conn
	for range 10 {
		c := dial(t, address)
		conns = append(conns, unwrap(<-g.fresh))
		c.mustGet("/", "only ping")
	}
	waitFor(t, func() bool { // every connection waits in an idle read
		for _, hc := range conns {
			hc.mu.Lock()
			reading := hc.reading && hc.completed
			hc.mu.Unlock()
			if !reading {
				return false
			}
		}
		return true
	})
	start := time.Now()
	g.srv.SetKeepAlivesEnabled(false)
	// With a wait of handoffGrace per connection this takes a second.
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("closing 10 idle connections took %v", d)
	}
}
