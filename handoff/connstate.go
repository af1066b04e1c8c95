package handoff

import (
	"net"
	"net/http"
	"reflect"
	"sync"
	"time"
)

// holdLimit bounds how long ServerHooks holds a request a superseded server
// has just read, waiting for its Shutdown to begin (2 s; a reload takes
// milliseconds). Past it, with Caddy's shutdown_delay, the old server
// answers the request itself.
var holdLimit = 2 * time.Second

// ServerHooks tells this package what only net/http knows about one
// http.Server that serves Views: when it reports a connection active, idle
// or hijacked, and when its Shutdown begins. Make one per server, call its
// ConnState from the server's ConnState hook and register ShutdownBegun
// with its RegisterOnShutdown.
//
// net/http reports StateActive right before its shutdown check, so while
// the server's View is superseded ConnState holds the request there until
// the Shutdown begins (the request is then handed, whole, to the newest
// View), the View is the newest again (a failed reload), or holdLimit.
type ServerHooks struct {
	once     sync.Once
	shutdown chan struct{} // closed when the server's Shutdown begins
}

// NewServerHooks returns the hooks of one server.
func NewServerHooks() *ServerHooks { return &ServerHooks{shutdown: make(chan struct{})} }

// ShutdownBegun records that the server's Shutdown has begun (net/http
// serves no request it reads from then on); register it with
// http.Server.RegisterOnShutdown.
func (h *ServerHooks) ShutdownBegun() { h.once.Do(func() { close(h.shutdown) }) }

func (h *ServerHooks) shuttingDown() bool { return closedWithin(h.shutdown, 0) }

// ConnState is the server's http.Server ConnState hook. A View's connection
// is found through Caddy's wrappers (NetConn, Raw, an embedded net.Conn),
// which must pass every byte they read on to net/http, as Caddy's h2c and
// TLS-state wrappers do; other connections are ignored.
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
	case http.StateHijacked: // net/http reports nothing more
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
	end := headerEnd(c.pending) // whole: net/http has read it
	c.withBody = end >= 0 && hasBody(c.pending[:end])
	v, skip := c.view, c.closed || c.noHandoff || c.view == nil
	c.mu.Unlock()
	if skip || !v.awaitShutdown(h, holdLimit) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.held = true
		stats.held.Add(1)
	}
}

// idle notes that net/http finished the last response whole and keeps the
// connection.
func (c *conn) idle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.writes == 0 {
		return // a fresh connection has nothing to finish
	}
	// The background read's abort was not the client's failure.
	c.completed, c.early, c.readFailed = true, false, false
	if c.bodyLeft > 0 {
		c.noHandoff = true // net/http would not keep it: never here
	}
}

// awaitShutdown waits while v is superseded until its server's Shutdown
// begins (h), v is the newest View again, or limit has passed. It reports
// whether the Shutdown has begun. Without a reload under way, the case of
// almost every request, it takes no lock.
func (v *View) awaitShutdown(h *ServerHooks, limit time.Duration) bool {
	if begun := h.shuttingDown(); begun || v.isNewest() {
		return begun
	}
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for {
		changed := v.socket.viewsChanged()
		if begun := h.shuttingDown(); begun || v.isNewest() {
			return begun
		}
		select {
		case <-h.shutdown:
			return true
		case <-changed:
		case <-timer.C:
			return h.shuttingDown()
		}
	}
}

var netConnType = reflect.TypeFor[net.Conn]()

// unwrap returns the View connection under nc (at most 8 wrappers deep), or
// nil. It goes through wrappers by what they wrap, never by address, so it
// cannot return another connection.
func unwrap(nc net.Conn) *conn {
	for range 8 {
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
// field, or nil.
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
