package handoff

import (
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// holdLimit bounds how long ConnState holds a request that a superseded
// server has just read, waiting for that server's Shutdown to begin
// (default 2 s). A reload stops the old configuration within milliseconds
// of starting the new one; when it takes longer (Caddy's shutdown_delay),
// the old server answers the request itself once the limit has passed.
var holdLimit = 2 * time.Second

// ConnState is an http.Server ConnState hook for servers that serve Views;
// chain it with any other hook. It closes the one gap the connection alone
// cannot: net/http reports StateActive right after it has read a request
// header and right before it checks whether its Shutdown has begun, and
// drops the request unanswered if it has. When the server's View has been
// superseded by a newer one (a reload is under way), ConnState holds the
// request there until the View is closed — net/http marks its Shutdown
// before it closes its listeners, so the request is then certainly dropped
// and is handed, whole, to the newest View's server — or until the View is
// the newest again (the reload failed), or for at most holdLimit. Only
// requests read in the instant a reload begins are held; every other call
// returns at once.
//
// Without the hook a request with a body dropped that way is lost (see the
// package doc). Connections are found through net.Conn wrappers that
// implement NetConn or keep the connection's addresses.
func ConnState(c net.Conn, state http.ConnState) {
	if state != http.StateNew && state != http.StateActive {
		return
	}
	hc := lookup(c)
	if hc == nil {
		return
	}
	if state == http.StateNew {
		hc.mu.Lock()
		hc.hooked = true
		hc.mu.Unlock()
		return
	}
	hc.headerRead()
}

// headerRead holds the server's goroutine, between its reading of a request
// header and its shutdown check, while a reload is under way; it notes
// whether the request is certain to be dropped.
func (c *conn) headerRead() {
	c.mu.Lock()
	c.hooked, c.active, c.held = true, true, false
	v := c.view
	if c.closed || c.noHandoff || c.overflow || v == nil {
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	dropped := v.awaitShutdown(holdLimit)
	if dropped {
		stats.held.Add(1)
	}
	c.mu.Lock()
	c.held = dropped && !c.closed
	c.mu.Unlock()
}

// awaitShutdown waits while v is superseded until v is closed, v is the
// newest View again, or limit has passed. It reports whether v is closed.
func (v *View) awaitShutdown(limit time.Duration) bool {
	var timeout <-chan time.Time
	for {
		changed := v.socket.viewsChanged()
		if v.isClosed.Load() {
			return true
		}
		if v.isNewest() {
			return false
		}
		if timeout == nil {
			timer := time.NewTimer(limit)
			defer timer.Stop()
			timeout = timer.C
		}
		select {
		case <-v.closed:
			return true
		case <-changed:
		case <-timeout:
			return v.isClosed.Load()
		}
	}
}

// connKey identifies a TCP connection by its two ends.
type connKey struct{ local, remote netip.AddrPort }

// byAddress finds the connections that Views' servers hold by their
// addresses, for wrappers that hide them (Caddy's http2Conn).
var byAddress sync.Map // connKey -> *conn

func keyOf(c net.Conn) (connKey, bool) {
	local, ok1 := c.LocalAddr().(*net.TCPAddr)
	remote, ok2 := c.RemoteAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return connKey{}, false
	}
	return connKey{local.AddrPort(), remote.AddrPort()}, true
}

// lookup returns the conn under c, or nil when c is not a View's.
func lookup(c net.Conn) *conn {
	for {
		switch x := c.(type) {
		case *conn:
			return x
		case interface{ NetConn() net.Conn }:
			c = x.NetConn()
			continue
		}
		break
	}
	if key, ok := keyOf(c); ok {
		if hc, ok := byAddress.Load(key); ok {
			return hc.(*conn)
		}
	}
	return nil
}
