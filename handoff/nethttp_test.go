package handoff

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The canaries below check, against the real net/http on a plain listener,
// what this package relies on and net/http does not document. When one
// fails, Go's net/http has changed under the package: the conn.serve of
// that Go must be read again before handoff/ is used with it.

// probeListener is a plain listener whose connections log what net/http
// does on them.
type probeListener struct {
	net.Listener
	conns chan *probeConn
}

func listenProbe(t *testing.T) *probeListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return &probeListener{Listener: ln, conns: make(chan *probeConn, 8)}
}

func (l *probeListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	p := &probeConn{Conn: c, changed: make(chan struct{})}
	l.conns <- p
	return p, nil
}

// probeEvent is one thing net/http did on a connection: "read" (a Read
// begun after received bytes had been read), "past deadline" (a read
// deadline set in the past), "write", "close", or the name of a state it
// reported ("idle").
type probeEvent struct {
	what     string
	received int
}

type probeConn struct {
	net.Conn
	mu       sync.Mutex
	events   []probeEvent
	received int
	changed  chan struct{} // closed and replaced at each event
}

func (c *probeConn) note(what string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.events = append(c.events, probeEvent{what, c.received})
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *probeConn) Read(p []byte) (int, error) {
	c.note("read")
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.received += n
	c.mu.Unlock()
	return n, err
}

func (c *probeConn) Write(p []byte) (int, error) {
	c.note("write")
	return c.Conn.Write(p)
}

func (c *probeConn) SetReadDeadline(t time.Time) error {
	if !t.IsZero() && t.Before(time.Now()) {
		c.note("past deadline")
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *probeConn) Close() error {
	c.note("close")
	return c.Conn.Close()
}

// await waits up to 5 s for an event that found reports, and returns the
// events up to it, or false.
func (c *probeConn) await(found func(i int, e probeEvent) bool) ([]probeEvent, bool) {
	timeout := time.After(5 * time.Second)
	for {
		c.mu.Lock()
		events, changed := slices.Clone(c.events), c.changed
		c.mu.Unlock()
		for i, e := range events {
			if found(i, e) {
				return events[:i+1], true
			}
		}
		select {
		case <-changed:
		case <-timeout:
			return events, false
		}
	}
}

// serveProbe serves handler on a probe listener and returns a client
// connection to it and the server's side of that connection.
func serveProbe(t *testing.T, srv *http.Server) (*client, *probeConn) {
	t.Helper()
	ln := listenProbe(t)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c := dial(t, ln.Addr().String())
	return c, <-ln.conns
}

const bodilessRequest = "GET / HTTP/1.1\r\nHost: test\r\n\r\n"

// TestNetHTTPReportsStateActiveBeforeItsShutdownCheck: ServerHooks hold a
// request in the StateActive hook until the server's Shutdown begins and
// then hand it to the new server, relying on net/http checking whether its
// Shutdown has begun after that report, and dropping the request unanswered
// when it has. (On a View without hooks, this is the request the package
// doc says can be lost.)
func TestNetHTTPReportsStateActiveBeforeItsShutdownCheck(t *testing.T) {
	var served atomic.Bool
	reached, open, shutdownBegun := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var once sync.Once
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			served.Store(true)
			io.WriteString(w, "served")
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateActive {
				once.Do(func() { close(reached); <-open })
			}
		},
	}
	srv.RegisterOnShutdown(func() { close(shutdownBegun) })
	c, _ := serveProbe(t, srv)
	c.send("POST", "/", "ping")
	select {
	case <-reached:
	case <-time.After(5 * time.Second):
		t.Fatal("net/http no longer reports StateActive once it has read a request header: " +
			"ServerHooks cannot hold a request read as a reload begins")
	}
	go srv.Shutdown(context.Background())
	<-shutdownBegun
	close(open)
	if _, body, err := c.response(); err == nil || served.Load() {
		t.Fatalf("net/http no longer reports StateActive before its shuttingDown() check: it served a request "+
			"(answered %q) whose StateActive report returned after its Shutdown began; ServerHooks hand such a "+
			"held request to the new server, which would serve it a second time", body)
	}
}

// TestNetHTTPReadsInTheBackgroundWhileServingABodilessRequest: a
// connection closed right after a bodiless request header was read, with
// nothing done on it since, counts as a request net/http dropped in its
// shutdown check (conn.boundary). That relies on net/http, when it serves
// such a request, beginning its background read at once, and setting a read
// deadline in the past to abort it before it closes the connection.
func TestNetHTTPReadsInTheBackgroundWhileServingABodilessRequest(t *testing.T) {
	t.Run("while the handler runs", func(t *testing.T) {
		release := make(chan struct{})
		c, pc := serveProbe(t, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			<-release
		})})
		defer close(release)
		io.WriteString(c.conn, bodilessRequest)
		if events, ok := pc.await(func(_ int, e probeEvent) bool {
			return e.what == "read" && e.received >= len(bodilessRequest)
		}); !ok {
			t.Fatalf("net/http no longer begins its background read while it serves a bodiless request "+
				"(events %v): a served request would look dropped and be handed off, served twice", events)
		}
	})
	t.Run("when the handler aborts", func(t *testing.T) {
		c, pc := serveProbe(t, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			panic(http.ErrAbortHandler)
		})})
		io.WriteString(c.conn, bodilessRequest)
		events, ok := pc.await(func(_ int, e probeEvent) bool { return e.what == "close" })
		if !ok {
			t.Fatalf("the aborted connection was not closed (events %v)", events)
		}
		if !slices.ContainsFunc(events, func(e probeEvent) bool {
			return e.what == "past deadline" || e.what == "read" && e.received >= len(bodilessRequest)
		}) {
			t.Fatalf("net/http no longer reads in the background, or aborts that read with a read deadline in "+
				"the past, before it closes a connection whose bodiless request it served (events %v): "+
				"a served request would look dropped and be handed off, served twice", events)
		}
	})
}

// TestNetHTTPWaitsForTheNextRequestInAnIdleRead: between two requests of a
// keep-alive connection, net/http reports the connection idle once the
// response is written whole, then waits for the next request in a Read;
// when that Read fails, it gives the connection up without a write. The
// package finishes a response on that report, knows a connection closed in
// that Read to be idle, and wakes that Read (a read deadline in the past) to
// move the connection to a newer server.
func TestNetHTTPWaitsForTheNextRequestInAnIdleRead(t *testing.T) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})}
	srv.ConnState = func(nc net.Conn, s http.ConnState) {
		if s == http.StateIdle {
			nc.(*probeConn).note("idle")
		}
	}
	c, pc := serveProbe(t, srv)
	io.WriteString(c.conn, bodilessRequest)
	if _, body, err := c.response(); err != nil || body != "ok" {
		t.Fatalf("answer %q, %v", body, err)
	}
	idleAt := -1
	events, ok := pc.await(func(i int, e probeEvent) bool {
		if e.what == "idle" {
			idleAt = i
		}
		return idleAt >= 0 && i > idleAt && e.what == "read"
	})
	if !ok {
		t.Fatalf("net/http no longer waits for a keep-alive connection's next request in a Read begun after "+
			"it reports the connection idle (events %v): idle connections would be neither woken to move "+
			"to a newer server nor known idle when closed", events)
	}
	if slices.ContainsFunc(events[idleAt:], func(e probeEvent) bool { return e.what == "write" }) {
		t.Fatalf("net/http wrote after reporting the connection idle (events %v): the package takes that "+
			"report for the end of a whole response", events)
	}
	_ = pc.Conn.SetReadDeadline(time.Unix(1, 0)) // as wakeIdleRead does
	events, ok = pc.await(func(_ int, e probeEvent) bool { return e.what == "close" })
	if !ok || slices.ContainsFunc(events[idleAt:], func(e probeEvent) bool { return e.what == "write" }) {
		t.Fatalf("net/http no longer gives a keep-alive connection up, unanswered, when its idle read fails "+
			"(events %v): a woken idle connection would stay with the old server", events)
	}
	if _, err := c.r.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("the client read %v after the idle read failed, want EOF", err)
	}
}
