package handoff

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// maxPending bounds the bytes kept of a request not answered yet (64 KiB):
// a connection that reads more before its response is never handed off.
const maxPending = 64 << 10

// handoffGrace is how long a connection its server closed at a request
// boundary waits, in the background, for the proof that the server stopped
// (its View closed, or its Shutdown begun) before it is closed instead:
// net/http marks its Shutdown before it closes its listeners and runs its
// Shutdown hooks in goroutines, so the proof may come an instant later.
var handoffGrace = 100 * time.Millisecond

// conn follows the HTTP/1.1 exchange on one accepted connection closely
// enough to know, when its server closes it, whether that server left it at
// a request boundary: from the order of the reads, writes and deadlines
// net/http sets on it, and from its server's ServerHooks. c.mu guards every
// field below it.
type conn struct {
	net.Conn

	mu   sync.Mutex
	cond sync.Cond // broadcast when a Read returns
	view *View     // the View whose server accepted it

	replay []byte // bytes read by a previous server, returned first
	closed bool   // the server closed it: it no longer reads or writes
	stash  []byte // bytes a Read got after the server closed it

	// noHandoff is sticky: not plain HTTP/1 (TLS, HTTP/2, after a 101 or
	// CONNECT), half-closed, hijacked, a write failed or fell short,
	// pipelined, or more than maxPending read unanswered.
	noHandoff bool
	everUsed  bool // a byte was read or written

	pending []byte  // bytes read since the last write
	large   *[]byte // the pooled buffer of pending, when it outgrew smallBuffer
	// bodyRead counts the body bytes read, not kept in pending, of a
	// request being served: never replayed, they count only for where
	// its body ends and against maxPending.
	bodyRead   int64
	lineRead   bool // pending holds the request's whole first line, judged
	lastReadAt int  // where in pending the last read with data began
	reads      int  // Read calls that reached the socket
	dataRead   int  // reads at the last read with data
	readFailed bool // the last Read returned an error (EOF, timeout)

	reading     bool // a Read is blocked in the socket
	woken       bool // wakeIdleRead interrupted it
	readStarted int  // writes when the current Read began
	writes      int

	// completed: net/http reported the connection idle after the last
	// response, or (with early) that response is whole by its framing and
	// a next request began before that report.
	completed bool
	aborted   bool // a read deadline in the past since the request began (net/http abandons a response)
	// newRequest: bytes of a request were read after a finished response
	// (or on a fresh connection) and its response has not begun.
	newRequest bool
	// hooks are the server's, if any. active: they reported the request
	// active, which net/http does before serving it. held: they held it
	// until the server's Shutdown began, so net/http drops it unanswered.
	// early: bytes of a next request were read before net/http reported the
	// response finished; no boundary until it does.
	hooks               *ServerHooks
	active, held, early bool
	withBody            bool      // the active request's header announces a body
	http11              bool      // the request being answered is HTTP/1.1
	readDeadline        time.Time // the server's last
	// bodyLeft is how many bytes of the answered request's body were
	// unread when its response began, less those read since; -1 when
	// unknown (chunked, or no whole header).
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
		if ne, ok := errors.AsType[net.Error](err); ok && n == 0 && ne.Timeout() {
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
// is held.
func (c *conn) midResponse() bool { return !c.completed && c.writes > 0 }

// waitsForRequest reports whether the server is between two exchanges and
// has not read a whole request header since; c.mu is held.
func (c *conn) waitsForRequest() bool {
	if c.hooks == nil || c.noHandoff || c.early || c.midResponse() || c.view == nil || c.view.isNewest() {
		return false
	}
	return headerEnd(c.pending) < 0 && (len(c.pending) == 0 || looksLikeRequest(c.pending))
}

// moveToNewest hands the connection, with the bytes read so far and extra,
// to the newest View, closing this wrapper; c.mu is held.
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

// wakeIdleRead interrupts a Read that waits for a next request, to hand the
// connection to the newest View.
func (c *conn) wakeIdleRead() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reading && !c.closed && c.readStarted == c.writes && c.waitsForRequest() {
		c.woken = true
		_ = c.Conn.SetReadDeadline(time.Unix(1, 0))
	}
}

// recordRead notes b, just read; c.mu is held.
func (c *conn) recordRead(b []byte) {
	if len(b) == 0 {
		return
	}
	c.everUsed = true
	if c.writes > 0 && !c.newRequest { // the response began, no next request read since
		if b = c.readAfterResponseBegan(b); len(b) == 0 {
			return
		}
	}
	if !c.newRequest {
		c.aborted, c.active, c.held, c.withBody = false, false, false, false
		c.newRequest = true
	}
	c.dataRead = c.reads
	c.lastReadAt = len(c.pending)
	if c.noHandoff { // never handed off: nothing read is kept
		c.resetPending()
		return
	}
	if int64(len(c.pending)+len(b))+c.bodyRead > maxPending { // a pipelined request may hide behind it
		c.noHandoff = true
		c.resetPending()
		return
	}
	if c.active && !c.held && c.withBody { // its body, which no other server will be given
		c.bodyRead += int64(len(b))
		return
	}
	c.appendPending(b)
	// The request line is judged on every read until it is whole, so that
	// no split hides TLS or the HTTP/2 preface. A line still incomplete (a
	// "P" may begin "POST" or "PRI") may be handed off: the next server reads
	// its bytes first, and nothing of it has been answered.
	if !c.lineRead {
		c.noHandoff = c.noHandoff || !looksLikeRequest(c.pending)
		c.lineRead = bytes.IndexByte(c.pending[c.lastReadAt:], '\n') >= 0
	}
}

// readAfterResponseBegan notes b, read after the response began, and
// returns what of it begins the next request; c.mu is held. The request's
// remaining body bytes are taken off first: a body is never taken for a
// request. What follows begins the next request once net/http reported the
// connection idle, or early when the response is whole by its framing
// (net/http's background read may get the next request's first byte before
// it reports idle). Anything else (pipelining, a body of unknown length)
// leaves no boundary: never handed off.
func (c *conn) readAfterResponseBegan(b []byte) []byte {
	if c.completed {
		return b // net/http reuses a connection only once its request was read whole
	}
	n := min(max(c.bodyLeft, 0), int64(len(b)))
	c.bodyLeft -= n
	b = b[n:]
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
	if err != nil || n < len(p) { // the response did not leave whole
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
	c.everUsed = true
	c.writes++
	if c.noHandoff {
		c.head.buf = nil // keep nothing of what it writes (HTTP/2 frames...)
		c.resetPending()
		return
	}
	if c.newRequest { // its response begins
		c.newRequest = false
		line := requestLine(c.pending)
		c.http11 = isHTTP11(line)
		if isConnect(line) || c.pipelined() {
			c.noHandoff = true
		}
		c.bodyLeft = c.unreadBody()
		c.head.reset(bytes.HasPrefix(line, []byte("HEAD ")))
	}
	// early: written after a next request began, before net/http reported
	// the last response finished: not net/http's own exchange.
	if c.head.feed(p) == headSwitching || c.early {
		c.noHandoff = true
	}
	c.held, c.completed = false, false
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
// deadline, and sets it under c.mu, so that it never lands on the
// connection after Close handed it to another server.
func (c *conn) SetReadDeadline(t time.Time) error {
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
// the connection (which may be another's by now).
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

// Close hands the connection to a newer server when the exchange is at a
// request boundary; otherwise it closes it. It never waits, as net/http
// calls it holding its server's lock (closeIdleConns): the proof that the
// server stopped, and the end of a read it wakes, are waited for in a
// goroutine, for at most handoffGrace.
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
	if reading { // wake an idle keep-alive read; what it gets goes to the next server
		_ = c.Conn.SetReadDeadline(time.Unix(1, 0))
	}
	c.mu.Unlock()
	if v != nil {
		v.forget(c)
	}
	if v == nil || verdict == notABoundary || !v.hasNewer() {
		return c.Conn.Close() // as a plain listener's
	}
	// The proof that the server gave the connection up at that boundary.
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

// handOffOrClose hands the connection, with replay and what a read woken by
// Close got, to v's newest View, or closes it.
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
// are not read yet, -1 when unknown (chunked, no whole header); c.mu is
// held.
func (c *conn) unreadBody() int64 {
	end := headerEnd(c.pending)
	if end < 0 || folded(c.pending[:end]) || headerHasToken(c.pending[:end], "Transfer-Encoding", "chunked") {
		return -1
	}
	return max(contentLength(c.pending[:end])-int64(len(c.pending)-end)-c.bodyRead, 0)
}

// pipelined reports whether what was read before the response began
// (pending, and bodyRead) holds more than its request; c.mu is held.
func (c *conn) pipelined() bool {
	end, read := headerEnd(c.pending), int64(len(c.pending))+c.bodyRead
	if end < 0 || read == int64(end) {
		return false
	}
	header := c.pending[:end]
	if headerHasToken(header, "Transfer-Encoding", "chunked") {
		return true // its end is not known: assume the worst
	}
	return read > int64(end)+max(contentLength(header), 0)
}

// verdict is what boundary makes of a connection its server closes.
type verdict int

const (
	notABoundary       verdict = iota // it is closed
	atBoundary                        // handed off once its View is closed
	boundaryOnShutdown                // handed off once its server's Shutdown began: the request read is dropped
)

// boundary reports whether the server left the exchange at a request
// boundary, and the bytes read that the next server must see; c.mu is held.
// Only a server with ServerHooks hands off. The cases follow net/http's
// conn.serve:
//
//   - a fresh connection, closed in a Read by Shutdown (closeIdleConns);
//   - a request held until the server's Shutdown began, dropped right after;
//   - a request (or its beginning) read and not yet reported active, when
//     Shutdown closes the connection as idle;
//   - a Read blocked after the last response, no whole header read since:
//     an idle keep-alive connection;
//   - once Shutdown began, a bodiless request header completed by the last
//     read and nothing since (no Read, write, or past read deadline):
//     net/http checks its Shutdown right after reporting it active, and
//     would follow a bodiless request it serves by a background read, whose
//     abort sets a past deadline. Not with a body: a handler may have acted
//     on it without reading the body;
//   - the last response reported idle, whole by its framing, kept alive,
//     its request read whole and nothing read since: the server stopped
//     after a response it did not mark as the last.
func (c *conn) boundary() ([]byte, verdict) {
	switch {
	case c.hooks == nil, c.noHandoff, c.early:
		return nil, notABoundary
	case !c.everUsed && c.reading:
		return nil, atBoundary
	case !c.everUsed, c.midResponse():
		return nil, notABoundary
	case c.held:
		return bytes.Clone(c.pending), atBoundary
	case len(c.pending) > 0 && !looksLikeRequest(c.pending):
		return nil, notABoundary
	case !c.active && c.newRequest:
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
