package handoff

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// maxPending bounds the bytes a connection keeps of a request it has not
// answered yet (default 64 KiB): a connection whose unanswered bytes exceed
// it (a large header or body read before its response) is never handed off.
const maxPending = 64 << 10

// handoffGrace is how long a connection its server closed at a request
// boundary waits, in the background, for the proof that the server stopped
// (its View closed, or its Shutdown begun) before it is closed instead of
// handed off (default 100 ms). net/http marks its Shutdown before it closes
// its listeners and runs its Shutdown hooks in goroutines, so a server may
// close a connection an instant before the proof comes.
var handoffGrace = 100 * time.Millisecond

// conn follows the HTTP/1.1 exchange on one accepted connection closely
// enough to know, when its server closes it, whether that server left it at
// a request boundary. What it learns comes from the order of reads, writes
// and deadline calls that net/http makes on it, and from its server's
// ServerHooks (states net/http reports, the start of its Shutdown).
type conn struct {
	net.Conn

	mu   sync.Mutex
	cond sync.Cond
	view *View // the View whose server accepted it

	replay []byte // bytes read by a previous server, returned first
	closed bool   // the server closed it: it no longer reads or writes
	stash  []byte // bytes a Read got after the server closed it

	// noHandoff is sticky: the connection is not plain HTTP/1 (TLS, HTTP/2,
	// after a 101 or CONNECT, half-closed, hijacked), a write failed or fell
	// short, requests were pipelined, or more than maxPending was read
	// unanswered: it is never handed off.
	noHandoff bool
	// everUsed: a byte was read or written on this connection.
	everUsed bool

	pending []byte // bytes read since the last write
	// large is the pooled buffer pending uses, when it outgrew smallBuffer.
	large *[]byte
	// lineRead: pending holds the whole first line of its request, which
	// was judged (an HTTP/1.x request line, or never handed off).
	lineRead bool
	// lastReadAt is where in pending the last read with data began.
	lastReadAt int
	reads      int  // Read calls that reached the socket
	dataRead   int  // the value of reads at the last read with data
	readFailed bool // the last Read returned an error (EOF, timeout)

	reading     bool // a Read is blocked in the socket
	woken       bool // wakeIdleRead interrupted it
	readStarted int  // writes when the current Read began
	writes      int

	// completed: net/http reported the connection idle after the last
	// response (it finished it normally and keeps the connection), or, with
	// early set, that response is whole by its framing and a next request
	// began before that report.
	completed bool
	// aborted: the server set a read deadline in the past since the
	// request began, as net/http does when it abandons a response.
	aborted bool
	// newRequest: bytes of a request were read after a finished response
	// (or on a fresh connection) and its response has not begun.
	newRequest bool
	// hooks are the server's, when it has them (see ServerHooks). active:
	// they reported the request being read as active, which net/http does
	// before it can serve it. held: they held that request until the
	// server's Shutdown began, so net/http's shutdown check drops it
	// unanswered. early: bytes of a next request were read before net/http
	// reported the response finished; until it does, no boundary.
	hooks               *ServerHooks
	active, held, early bool
	// http11: the request being answered is HTTP/1.1.
	http11 bool
	// readDeadline is the read deadline the server last set.
	readDeadline time.Time
	// bodyLeft is how many bytes of the answered request's body were
	// still unread when its response began, less those read since; -1
	// when unknown (chunked, or no whole header).
	bodyLeft int64
	head     responseHead
}

func newConn(c net.Conn, replay []byte) *conn {
	w := &conn{Conn: c, replay: replay}
	w.cond.L = &w.mu
	w.head.done, w.head.connectionClose = true, true
	return w
}

func (c *conn) attach(v *View) {
	c.mu.Lock()
	c.view = v
	c.mu.Unlock()
}

// Read returns replayed bytes first, then reads the socket.
func (c *conn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	if len(c.replay) > 0 {
		n := copy(p, c.replay)
		c.replay = c.replay[n:]
		if len(c.replay) == 0 {
			c.replay = nil // keep none of it
		}
		c.reads++
		c.recordRead(p[:n])
		c.mu.Unlock()
		return n, nil
	}
	if c.waitsForRequest() && c.moveToNewest(nil) {
		// A newer View exists: this server reads no new request.
		c.mu.Unlock()
		return 0, io.EOF
	}
	c.reading = true
	c.reads++
	c.readStarted = c.writes
	c.mu.Unlock()

	n, err := c.Conn.Read(p)

	c.mu.Lock()
	defer c.mu.Unlock()
	c.reading = false
	c.cond.Broadcast()
	if c.closed {
		// The server closed the connection meanwhile: what this read got
		// belongs to whichever server gets the connection next.
		c.stash = append(c.stash, p[:n]...)
		return 0, net.ErrClosed
	}
	if c.woken {
		c.woken = false
		if c.waitsForRequest() && c.moveToNewest(p[:n]) {
			return 0, io.EOF
		}
		// Woken for a move that could not happen (the newer View closed):
		// the read deadline this server had set applies again.
		_ = c.Conn.SetReadDeadline(c.readDeadline)
		if n == 0 && isTimeout(err) {
			c.mu.Unlock()
			n, err = c.Read(p)
			c.mu.Lock()
			return n, err
		}
	}
	c.recordRead(p[:n])
	c.readFailed = err != nil
	return n, err
}

// midResponse reports whether a response has begun and not finished; c.mu
// is held. Otherwise the connection is between two exchanges.
func (c *conn) midResponse() bool { return !c.completed && c.writes > 0 }

// answering reports whether the response to the current request has begun
// and no byte of a next request has been read since; c.mu is held.
func (c *conn) answering() bool { return c.writes > 0 && !c.newRequest }

// waitsForRequest reports whether the server is between two exchanges and
// has not read a whole request header since; c.mu is held.
func (c *conn) waitsForRequest() bool {
	if c.hooks == nil || c.noHandoff || c.early || c.midResponse() || c.view == nil || c.view.isNewest() {
		return false
	}
	return headerEnd(c.pending) < 0 && (len(c.pending) == 0 || looksLikeRequest(c.pending))
}

// moveToNewest hands the connection, with the bytes read so far and extra,
// to the newest View, and closes this wrapper; c.mu is held.
func (c *conn) moveToNewest(extra []byte) bool {
	replay := append(bytes.Clone(c.pending), extra...)
	if !c.view.handOff(c.Conn, replay) {
		return false
	}
	c.closed = true
	c.resetPending()
	c.view.forget(c)
	return true
}

// wakeIdleRead interrupts a Read that waits for a next request, so that it
// hands the connection to the newest View.
func (c *conn) wakeIdleRead() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reading && !c.closed && c.readStarted == c.writes && c.waitsForRequest() {
		c.woken = true
		_ = c.Conn.SetReadDeadline(time.Unix(1, 0))
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// recordRead notes b, just read; c.mu is held.
func (c *conn) recordRead(b []byte) {
	if len(b) == 0 {
		return
	}
	c.everUsed = true
	if c.answering() {
		if b = c.readAfterResponseBegan(b); len(b) == 0 {
			return
		}
	}
	if !c.newRequest {
		c.aborted, c.active, c.held = false, false, false
		c.newRequest = true
	}
	c.dataRead = c.reads
	c.lastReadAt = len(c.pending)
	if len(c.pending)+len(b) > maxPending {
		// What was read is no longer all known (a pipelined request may
		// hide behind it, or its first byte in net/http's buffer).
		c.noHandoff = true
		c.resetPending()
		return
	}
	c.appendPending(b)
	c.judgeLine()
}

// judgeLine decides, on every read until the first line of the request in
// pending is whole, whether it is an HTTP/1.x request line; c.mu is held.
// A line split across reads is followed to its end, so a connection whose
// bytes stop looking like one (TLS, the HTTP/2 preface "PRI * HTTP/2.0",
// anything else) is never handed off, however it was split. A connection
// whose line is still incomplete (a "P" that may begin "POST" or "PRI")
// may be handed off with the bytes it sent: the next server reads them
// first, and nothing of it has been answered.
func (c *conn) judgeLine() {
	if c.lineRead {
		return
	}
	if !looksLikeRequest(c.pending) {
		c.noHandoff = true
	}
	c.lineRead = bytes.IndexByte(c.pending[c.lastReadAt:], '\n') >= 0
}

// readAfterResponseBegan notes b, read after the response to the current
// request began, and returns what of it begins the next request; c.mu is
// held. Bytes of the request's body (read late by a full-duplex handler, or
// discarded by net/http after it) are taken off first: a body is never taken
// for a request. What follows the body begins the next request when
// net/http has reported the connection idle, or when the response is whole
// by its framing: a client sends its next request as soon as it has the
// response, and net/http's background read may get its first byte before it
// reports the connection idle. Such early bytes give no boundary until it
// does. Anything else (pipelining, a body of unknown length) leaves no
// boundary to tell: the connection is never handed off.
func (c *conn) readAfterResponseBegan(b []byte) []byte {
	if c.completed {
		return b // net/http reuses a connection only once its request was read whole
	}
	if c.bodyLeft > 0 {
		n := min(c.bodyLeft, int64(len(b)))
		c.bodyLeft -= n
		b = b[n:]
	}
	if len(b) == 0 {
		return nil
	}
	if c.bodyLeft == 0 && c.http11 && c.head.keepAlive() {
		c.completed, c.early = true, true
	} else {
		c.noHandoff = true // pipelined, or where the body ends is not known
	}
	return b
}

// Write notes the response it belongs to and writes p.
func (c *conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	c.recordWrite(p)
	c.mu.Unlock()
	n, err := c.Conn.Write(p)
	if err != nil || n < len(p) {
		// The response did not leave whole, whatever net/http does next.
		c.mu.Lock()
		c.noHandoff = true
		c.mu.Unlock()
	}
	return n, err
}

// recordWrite notes p, about to be written; c.mu is held.
func (c *conn) recordWrite(p []byte) {
	if len(p) == 0 {
		return
	}
	if c.noHandoff {
		// It is never handed off: keep nothing of what it writes (HTTP/2
		// frames would fill the response header buffer).
		c.everUsed = true
		c.writes++
		c.head.buf = nil
		c.resetPending()
		return
	}
	if c.newRequest {
		// The first write after reading a request: its response begins.
		c.newRequest = false
		line := requestLine(c.pending)
		c.http11 = isHTTP11(line)
		if isConnect(line) || c.pipelined() {
			c.noHandoff = true
		}
		c.bodyLeft = unreadBody(c.pending)
		c.head.reset(bytes.HasPrefix(line, []byte("HEAD ")))
	}
	// early: a response written after a next request began, before
	// net/http reported the last one finished, is not net/http's own exchange.
	if c.head.feed(p) == headSwitching || c.early {
		c.noHandoff = true
	}
	c.everUsed = true
	c.held = false
	c.writes++
	c.completed = false
	c.resetPending()
}

// SetDeadline sets both deadlines, as the underlying connection does.
func (c *conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetReadDeadline notes an abort (a deadline in the past) and the server's
// deadline, and sets it.
func (c *conn) SetReadDeadline(t time.Time) error {
	// Set under c.mu, so that a deadline of this server's never lands on
	// the connection after Close has handed it to another.
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	if !t.IsZero() && t.Before(time.Now()) {
		c.aborted = true
	}
	c.readDeadline = t
	return c.Conn.SetReadDeadline(t)
}

// SetWriteDeadline sets the write deadline, unless the server has closed
// the connection (which may be another server's by now).
func (c *conn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	return c.Conn.SetWriteDeadline(t)
}

// CloseWrite half-closes the connection, which is then never handed off.
func (c *conn) CloseWrite() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return net.ErrClosed
	}
	c.noHandoff = true
	c.mu.Unlock()
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Close hands the connection to a newer server when this one's View is
// closing and the exchange is at a request boundary; otherwise it closes it.
// It never waits: net/http calls it holding its server's lock
// (closeIdleConns). What needs waiting for (the proof that the server
// stopped, the end of a read it wakes) is waited for in a goroutine, for at
// most handoffGrace, which then hands the connection off or closes it.
func (c *conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return net.ErrClosed
	}
	c.closed = true
	v, hooks := c.view, c.hooks
	replay, verdict := c.boundary()
	c.resetPending()
	reading := c.reading && verdict != notABoundary
	if reading {
		// An idle keep-alive read is blocked in the socket: wake it; what
		// it got goes to the next server (see Read).
		_ = c.Conn.SetReadDeadline(time.Unix(1, 0))
	}
	c.mu.Unlock()
	if v != nil {
		v.forget(c)
	}
	if v == nil || verdict == notABoundary || !v.hasNewer() {
		// No newer View to take it (no reload, or the last config stops):
		// closed at once, as a plain listener's would be.
		return c.Conn.Close()
	}
	// The proof that the server gave the connection up at that boundary.
	// net/http runs its Shutdown hooks in goroutines it starts just before
	// closing the connections it finds idle, and it marks its Shutdown
	// before it closes its listeners: either may come an instant later.
	stopped := v.closed
	if verdict == boundaryOnShutdown {
		stopped = hooks.shutdown
	}
	if !reading && closedWithin(stopped, 0) {
		c.handOffOrClose(v, replay)
		return nil
	}
	grace := handoffGrace
	go func() {
		if !closedWithin(stopped, grace) {
			c.Conn.Close()
			return
		}
		c.handOffOrClose(v, replay)
	}()
	return nil
}

// handOffOrClose hands the connection, closed by its server, with replay
// and what a read woken by Close got, to v's newest View, or closes it.
func (c *conn) handOffOrClose(v *View, replay []byte) {
	c.mu.Lock()
	for c.reading {
		c.cond.Wait()
	}
	replay = append(replay, c.stash...)
	c.mu.Unlock()
	if !v.handOff(c.Conn, replay) {
		c.Conn.Close()
	}
}

// hasBody reports whether a request header block announces a body.
func hasBody(header []byte) bool {
	encoded := false
	headerValues(header, "Transfer-Encoding", func([]byte) { encoded = true })
	return encoded || contentLength(header) > 0
}

// unreadBody returns how many bytes of the body of the request in pending
// are not in pending, or -1 when that is not known (a chunked body, no whole
// header).
func unreadBody(pending []byte) int64 {
	end := headerEnd(pending)
	if end < 0 || folded(pending[:end]) || headerHasToken(pending[:end], "Transfer-Encoding", "chunked") {
		return -1
	}
	return max(contentLength(pending[:end])-int64(len(pending)-end), 0)
}

// pipelined reports whether pending, read before the response to its
// request began, holds more than that request; c.mu is held.
func (c *conn) pipelined() bool {
	end := headerEnd(c.pending)
	if end < 0 || len(c.pending) == end {
		return false
	}
	header := c.pending[:end]
	if headerHasToken(header, "Transfer-Encoding", "chunked") {
		return true // its end is not known here: assume the worst
	}
	return int64(len(c.pending)) > int64(end)+max(contentLength(header), 0)
}

// verdict is what boundary makes of a connection its server closes.
type verdict int

const (
	// notABoundary: the connection is closed.
	notABoundary verdict = iota
	// atBoundary: it is handed off, once its View is closed.
	atBoundary
	// boundaryOnShutdown: it is handed off, once its server's Shutdown has
	// begun (ServerHooks), which proves the request read is dropped.
	boundaryOnShutdown
)

// boundary reports whether the server left the exchange at a request
// boundary, and the bytes already read that the next server must see; c.mu
// is held. Only a server with ServerHooks hands connections off. The cases
// follow net/http's conn.serve:
//
//   - nothing read or written yet: a fresh connection;
//   - a request held until the server's Shutdown began, which net/http drops
//     right after;
//   - a request (or its beginning) read and not yet reported active, which
//     net/http does before it may serve one, when Shutdown closes the
//     connection as idle;
//   - a Read blocked after the last response, with no complete request
//     header read since: an idle keep-alive connection (closeIdleConns);
//   - once Shutdown has begun, a bodiless request header completed by the
//     last read and nothing done since (no Read, no write, no read deadline
//     in the past): net/http checks its Shutdown right after reporting the
//     request active, and a bodiless request it serves is followed at once
//     by its background read, whose abort (panic, hijack) sets a read
//     deadline in the past. A request with a body is not handed off then: a
//     handler may have acted on it without reading its body;
//   - the last response reported finished (the connection idle), whole by
//     its own framing, kept alive (HTTP/1.1 without "Connection: close"),
//     its request read whole and nothing read since: the server stopped
//     after a response it did not mark as the last.
func (c *conn) boundary() ([]byte, verdict) {
	if c.hooks == nil || c.noHandoff || c.early {
		return nil, notABoundary
	}
	if !c.everUsed {
		// A fresh connection: net/http closes one that is still waiting for
		// its first request only in Shutdown (closeIdleConns).
		if c.reading {
			return nil, atBoundary
		}
		return nil, notABoundary
	}
	if c.midResponse() {
		return nil, notABoundary
	}
	if c.held {
		return bytes.Clone(c.pending), atBoundary
	}
	if len(c.pending) > 0 && !looksLikeRequest(c.pending) {
		return nil, notABoundary
	}
	if !c.active && c.newRequest {
		return bytes.Clone(c.pending), boundaryOnShutdown
	}
	requestEnd := headerEnd(c.pending)
	switch {
	case c.reading:
		if c.readStarted == c.writes && requestEnd < 0 {
			return bytes.Clone(c.pending), atBoundary
		}
	case requestEnd >= 0:
		header := c.pending[:requestEnd]
		dropped := c.dataRead == c.reads && !c.aborted && c.lastReadAt < requestEnd
		if dropped && !folded(header) && !hasBody(header) {
			return bytes.Clone(c.pending), boundaryOnShutdown
		}
	case len(c.pending) == 0:
		if !c.readFailed && c.http11 && c.head.keepAlive() && c.bodyLeft == 0 {
			return nil, atBoundary
		}
	}
	return nil, notABoundary
}

// closedWithin reports whether ch is closed or closes within d.
func closedWithin(ch <-chan struct{}, d time.Duration) bool {
	select {
	case <-ch:
		return true
	default:
	}
	if d <= 0 {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return false
	}
}
