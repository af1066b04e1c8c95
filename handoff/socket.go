// Package handoff keeps an HTTP/1.1 listening socket open across
// configuration reloads and moves to the new server every connection that the
// outgoing server would close without answering (docs/handoff.md).
//
// Listen returns a View of one socket per address, shared by every
// configuration that listens there and closed with the last View, so a
// reload never resets its accept queue; new connections go to the newest
// View. A connection that the server of a closed View gives up at a request
// boundary is handed, with the bytes already read, to the newest View's
// server; never mid-response, after a protocol switch, or when not HTTP/1.
// ServerHooks tells what only net/http knows; a server without them only
// shares the socket. No request is served twice. One window remains where
// a request can be lost: a whole reload between the hooks reporting it
// active and net/http's shutdown check a few instructions later.
//
// The package knows nothing of Caddy; caddyhandoff registers it as the
// network "handoff", with the app that installs ServerHooks.
package handoff

import (
	"context"
	"errors"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var stats struct{ handedOff, held atomic.Int64 }

// Stats returns, since the process started, how many connections were handed
// to a newer View, and how many requests ServerHooks held until their
// server's Shutdown began.
func Stats() (handedOff, held int64) { return stats.handedOff.Load(), stats.held.Load() }

// sockets holds the shared sockets by network and address.
var sockets = struct {
	sync.Mutex
	byKey map[string]*socket
}{byKey: make(map[string]*socket)}

// socket is one kernel listening socket and the Views that serve it.
type socket struct {
	key     string
	address string // as given to Listen
	ln      net.Listener

	mu      sync.Mutex
	views   []*View       // open Views, oldest committed first, pending ones among them
	changed chan struct{} // closed and replaced when views changes
	newest  atomic.Pointer[View]
}

// viewsChanged returns a channel closed at the next change of s's Views.
func (s *socket) viewsChanged() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// noteChange wakes those waiting for a change of s's Views; s.mu is held.
func (s *socket) noteChange() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Listen returns a View of the listening socket for network and address,
// opening it with lc when it has no open View (always for port 0). The
// View is the newest at once: new connections go to it, and the older
// Views' idle connections move to it.
func Listen(ctx context.Context, network, address string, lc net.ListenConfig) (*View, error) {
	return listen(ctx, network, address, lc, false)
}

// ListenPending is Listen for a server whose configuration may yet fail to
// start: while an older View of the socket is committed, its View takes no
// connection, nor do the older Views give up theirs, until Commit.
func ListenPending(ctx context.Context, network, address string, lc net.ListenConfig) (*View, error) {
	return listen(ctx, network, address, lc, true)
}

func listen(ctx context.Context, network, address string, lc net.ListenConfig, pending bool) (*View, error) {
	if !slices.Contains([]string{"tcp", "tcp4", "tcp6"}, network) {
		return nil, errors.New("handoff: network " + network + " is not supported (want tcp, tcp4 or tcp6)")
	}
	key := network + "/" + address
	shareable := !hasPortZero(address)

	sockets.Lock()
	defer sockets.Unlock()
	if s := sockets.byKey[key]; s != nil && shareable {
		return s.addView(pending), nil
	}
	ln, err := lc.Listen(ctx, network, address)
	if err != nil {
		return nil, overlapping(address, err)
	}
	s := &socket{key: key, address: address, ln: ln, changed: make(chan struct{})}
	if shareable {
		sockets.byKey[key] = s
	}
	v := s.addView(false) // no older View
	go s.acceptLoop()
	return v, nil
}

// OverlapError is the error of Listen when the kernel refused the address
// (EADDRINUSE) and open sockets of this package overlap it: the same port,
// and the same host or either one every interface. Without SO_REUSEPORT
// the kernel lets no two of them listen at once, so a configuration that
// moves a socket to an overlapping host cannot open its socket while the
// old one is open.
type OverlapError struct {
	Address string   // the address refused, as given to Listen
	Open    []string // the open sockets it overlaps, as given to Listen
	Err     error    // the kernel's refusal
}

func (e *OverlapError) Error() string {
	return "handoff: listening on " + e.Address + ": it overlaps the open socket of " +
		strings.Join(e.Open, ", ") + ": " + e.Err.Error()
}

func (e *OverlapError) Unwrap() error { return e.Err }

// overlapping returns err, the refusal to listen on address, as an
// OverlapError when it is EADDRINUSE and open sockets overlap address;
// sockets is locked.
func overlapping(address string, err error) error {
	var refused *net.OpError
	if !errors.Is(err, syscall.EADDRINUSE) || !errors.As(err, &refused) {
		return err
	}
	wanted, ok := refused.Addr.(*net.TCPAddr) // as resolved for the bind
	if !ok {
		return err
	}
	var open []string
	for _, s := range sockets.byKey {
		bound, ok := s.ln.Addr().(*net.TCPAddr)
		if ok && bound.Port == wanted.Port &&
			(bound.IP.Equal(wanted.IP) || bound.IP.IsUnspecified() || wanted.IP.IsUnspecified()) {
			open = append(open, s.address)
		}
	}
	if len(open) == 0 {
		return err
	}
	slices.Sort(open)
	return &OverlapError{Address: address, Open: open, Err: err}
}

func hasPortZero(address string) bool {
	_, port, err := net.SplitHostPort(address)
	return err != nil || port == "0" || port == ""
}

// addView opens a View. Unless pending while another View is committed,
// it is committed and becomes the newest: the older ones' idle connections
// move to it at once.
func (s *socket) addView(pending bool) *View {
	v := &View{socket: s, incoming: make(chan net.Conn), closed: make(chan struct{}), conns: make(map[*conn]struct{})}
	s.mu.Lock()
	s.views = append(s.views, v)
	if pending && slices.ContainsFunc(s.views, func(open *View) bool { return open.committed }) {
		s.mu.Unlock()
		return v
	}
	s.mu.Unlock()
	v.Commit()
	return v
}

// Commit makes v, opened by ListenPending, the newest View: new
// connections go to it, and the older Views' idle connections move to it.
// It does nothing once v is committed or closed.
func (v *View) Commit() {
	s := v.socket
	s.mu.Lock()
	if v.committed || !slices.Contains(s.views, v) {
		s.mu.Unlock()
		return
	}
	v.committed = true
	older := slices.DeleteFunc(slices.Clone(s.views), func(open *View) bool { return open == v })
	s.views = append(older, v) // the newest last
	s.newest.Store(v)
	s.noteChange()
	s.mu.Unlock()
	for _, old := range older {
		old.wakeIdleReads()
	}
}

// removeView forgets v and closes the kernel socket when no View is left.
func (s *socket) removeView(v *View) {
	sockets.Lock()
	defer sockets.Unlock()
	s.mu.Lock()
	s.views = slices.DeleteFunc(s.views, func(open *View) bool { return open == v })
	last := len(s.views) == 0
	var newest *View // the newest committed View, else the newest pending one
	for _, open := range s.views {
		if newest == nil || open.committed || !newest.committed {
			newest = open
		}
	}
	if newest != nil {
		newest.committed = true // it serves now: a later pending View waits for its Commit
	}
	s.newest.Store(newest)
	s.noteChange()
	s.mu.Unlock()
	if last {
		if sockets.byKey[s.key] == s {
			delete(sockets.byKey, s.key)
		}
		s.ln.Close()
	}
}

// acceptLoop gives each connection accepted to the newest View, blocking
// while its server is not accepting (the kernel's queue applies
// backpressure), until the socket is closed.
func (s *socket) acceptLoop() {
	var delay time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: retry as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			time.Sleep(delay)
			continue
		}
		delay = 0
		s.deliver(newConn(c, nil))
	}
}

// deliver gives c to the newest open View; with none left it closes c.
func (s *socket) deliver(c *conn) {
	for {
		v := s.newest.Load()
		if v == nil {
			c.Conn.Close() // no server accepted it
			return
		}
		select {
		case v.incoming <- c:
			return
		case <-v.closed:
		}
	}
}

// View is one server's share of a listening socket. It implements
// net.Listener; closing it closes the socket only when it is the last View.
type View struct {
	socket   *socket
	incoming chan net.Conn
	closed   chan struct{}
	once     sync.Once
	handoffs atomic.Int64 // for the tests: see HandedOff

	mu    sync.Mutex
	conns map[*conn]struct{} // the connections its server holds

	committed bool // under socket.mu: see Commit
}

// forget removes c from the connections of v's server.
func (v *View) forget(c *conn) {
	v.mu.Lock()
	delete(v.conns, c)
	v.mu.Unlock()
}

// wakeIdleReads wakes the reads of v's server that wait for a next request,
// so that their connections move to the newest open View: once another View
// is newer, or v is closed, its server reads no new request.
func (v *View) wakeIdleReads() {
	v.mu.Lock()
	conns := slices.Collect(maps.Keys(v.conns))
	v.mu.Unlock()
	for _, c := range conns {
		c.wakeIdleRead()
	}
}

// hasNewer reports whether a newer View of v's socket is open.
func (v *View) hasNewer() bool {
	newest := v.socket.newest.Load()
	return newest != nil && newest != v
}

// isNewest reports whether v is the newest open View of its socket.
func (v *View) isNewest() bool { return v.socket.newest.Load() == v }

// Accept returns the next connection for this View's server.
func (v *View) Accept() (net.Conn, error) {
	if closedWithin(v.closed, 0) {
		return nil, v.closedError()
	}
	select {
	case c := <-v.incoming:
		c.(*conn).attach(v)
		v.mu.Lock()
		v.conns[c.(*conn)] = struct{}{}
		v.mu.Unlock()
		return c, nil
	case <-v.closed:
		return nil, v.closedError()
	}
}

func (v *View) closedError() error {
	return &net.OpError{Op: "accept", Net: v.socket.ln.Addr().Network(), Addr: v.socket.ln.Addr(), Err: net.ErrClosed}
}

// Close stops this View's Accept. The connections its server waits on for a
// next request move to the newest open View at once, whether or not the
// server stops (a config that failed to start closes its Views before its
// server's Shutdown runs); the others stay with its server, or move when it
// gives them up unanswered.
func (v *View) Close() error {
	v.once.Do(func() {
		close(v.closed)
		v.socket.removeView(v)
		if v.socket.newest.Load() != nil {
			v.wakeIdleReads()
		}
	})
	return nil
}

// Addr returns the socket's address.
func (v *View) Addr() net.Addr { return v.socket.ln.Addr() }

// handOff moves underlying to the newest open View, with replay as the first
// bytes it reads; false, leaving it alone, when no other View is open.
func (v *View) handOff(underlying net.Conn, replay []byte) bool {
	if !v.hasNewer() {
		return false
	}
	v.handoffs.Add(1)
	stats.handedOff.Add(1)
	_ = underlying.SetDeadline(time.Time{})
	go v.socket.deliver(newConn(underlying, replay))
	return true
}
