package handoff

import (
	"net"
	"net/http"
	"reflect"
	"sync"
	"time"
)

// holdLimit bounds how long a ServerHooks holds a request that a superseded
// server has just read, waiting for that server's Shutdown to begin
// (default 2 s). A reload stops the old configuration within milliseconds
// of starting the new one; when it takes longer (Caddy's shutdown_delay),
// the old server answers the request itself once the limit has passed.
var holdLimit = 2 * time.Second

// ServerHooks tells this package what only net/http knows about one
// http.Server that serves Views: when it reports a connection active, idle
// or hijacked, and when its Shutdown begins. Make one per server, call its
// ConnState from the server's ConnState hook (chained with any other) and
// register ShutdownBegun with the server's RegisterOnShutdown.
//
// What it changes is in the package doc. The one gap the connection alone
// cannot close: net/http reports StateActive after reading a request header
// and right before its shutdown check, so while the server's View is
// superseded ConnState holds the request there until the Shutdown begins
// (the request is then handed, whole, to the newest View's server), the
// View is the newest again (the reload failed), or holdLimit has passed.
type ServerHooks struct {
	once     sync.Once
	shutdown chan struct{} // closed when the server's Shutdown begins
}

// NewServerHooks returns the hooks of one server.
func NewServerHooks() *ServerHooks { return &ServerHooks{shutdown: make(chan struct{})} }

// ShutdownBegun records that the server's Shutdown has begun; register it
// with http.Server.RegisterOnShutdown. net/http marks its Shutdown before it
// runs these functions, so from then on it serves no request it reads.
func (h *ServerHooks) ShutdownBegun() { h.once.Do(func() { close(h.shutdown) }) }

// shuttingDown reports whether ShutdownBegun was called.
func (h *ServerHooks) shuttingDown() bool { return closedWithin(h.shutdown, 0) }

// ConnState is the server's http.Server ConnState hook. Connections that
// are not a View's (another listener's) are ignored; a View's connection is
// found through the wrappers Caddy and its modules put around it (NetConn,
// Raw, or an embedded net.Conn field). Such a wrapper must pass every byte
// it reads on to net/http, not keep any back, as Caddy's h2c and TLS-state
// wrappers do.
func (h *ServerHooks) ConnState(nc net.Conn, state http.ConnState) {
	c := unwrap(nc)
	if c == nil {
		return
	}
	switch state {
	case http.StateNew:
		c.mu.Lock()
		c.hooks = h
		c.mu.Unlock()
	case http.StateActive:
		c.headerRead(h)
	case http.StateIdle:
		c.idle()
	case http.StateHijacked:
		// The handler owns the connection: net/http reports nothing more.
		c.mu.Lock()
		c.noHandoff = true
		c.mu.Unlock()
	}
}

// headerRead holds the server's goroutine, between its reading of a request
// header and its shutdown check, while a reload is under way; it notes
// whether the request is certain to be dropped.
func (c *conn) headerRead(h *ServerHooks) {
	c.mu.Lock()
	c.hooks, c.active, c.held = h, true, false
	v := c.view
	if c.closed || c.noHandoff || v == nil {
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	dropped := v.awaitShutdown(h, holdLimit)
	c.mu.Lock()
	defer c.mu.Unlock()
	if dropped && !c.closed {
		c.held = true
		stats.held.Add(1)
	}
}

// idle notes that net/http finished the last response whole and keeps the
// connection for a next request.
func (c *conn) idle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.writes == 0 {
		return // a fresh connection has nothing to finish
	}
	c.completed = true
	c.early = false
	c.readFailed = false // the background read's abort is not the client's
	if c.bodyLeft > 0 {
		c.noHandoff = true // net/http would not keep it: never here
	}
}

// awaitShutdown waits while v is superseded until its server's Shutdown
// begins (h), v is the newest View again, or limit has passed. It reports
// whether the Shutdown has begun.
func (v *View) awaitShutdown(h *ServerHooks, limit time.Duration) bool {
	// Every request comes here; almost all find no reload under way, which
	// takes no lock.
	if h.shuttingDown() {
		return true
	}
	if v.isNewest() {
		return false
	}
	var timeout <-chan time.Time
	for {
		changed := v.socket.viewsChanged()
		if h.shuttingDown() {
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
		case <-h.shutdown:
			return true
		case <-changed:
		case <-timeout:
			return h.shuttingDown()
		}
	}
}

// maxWrapping bounds how many wrappers unwrap looks through.
const maxWrapping = 8

var netConnType = reflect.TypeFor[net.Conn]()

// unwrap returns the View connection under nc, or nil. It goes through
// wrappers by what they wrap, never by address, so it cannot return
// another connection.
func unwrap(nc net.Conn) *conn {
	for range maxWrapping {
		switch x := nc.(type) {
		case nil:
			return nil
		case *conn:
			return x
		case interface{ NetConn() net.Conn }: // crypto/tls
			nc = x.NetConn()
		case interface{ Raw() net.Conn }: // PROXY protocol
			nc = x.Raw()
		default:
			nc = embeddedConn(nc)
		}
	}
	return nil
}

// embeddedConn returns the net.Conn that nc's struct embeds as an exported
// field (as caddyhttp's h2c and TLS-state wrappers do), or nil.
func embeddedConn(nc net.Conn) net.Conn {
	v := reflect.ValueOf(nc)
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return nil
		}
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return nil
	}
	for i := range v.NumField() {
		if f := v.Type().Field(i); f.Anonymous && f.IsExported() && f.Type == netConnType {
			inner, _ := v.Field(i).Interface().(net.Conn)
			return inner
		}
	}
	return nil
}
