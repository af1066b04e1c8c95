package handoff

import (
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// splitPreface is a client connection whose first write (the HTTP/2
// connection preface) leaves in two parts: the first at bytes, then, once
// between has returned, the rest.
type splitPreface struct {
	net.Conn
	at      int
	between func()
	once    sync.Once
}

func (s *splitPreface) Write(p []byte) (int, error) {
	first := 0
	s.once.Do(func() {
		if len(p) > s.at {
			first, _ = s.Conn.Write(p[:s.at])
			s.between()
		}
	})
	n, err := s.Conn.Write(p[first:])
	return first + n, err
}

// pendingIs waits until c has read exactly want since its last write.
func pendingIs(t *testing.T, c *conn, want string) {
	t.Helper()
	waitFor(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		// Once judged never to be handed off, it keeps nothing of what it reads.
		return string(c.pending) == want || (c.noHandoff && c.everUsed)
	})
}

// TestAnH2CConnectionIsNeverHandedOff: an HTTP/2 connection with prior
// knowledge whose preface is split after "PRI * HTTP/" (which could begin
// an HTTP/1 request line) when a reload begins stays with its server, which
// serves it; it is never handed to the new server.
func TestAnH2CConnectionIsNeverHandedOff(t *testing.T) {
	for _, at := range []int{len("PRI * HTTP/"), len("PRI "), len("PRI * HTTP/2.0\r\n")} {
		t.Run(strings.TrimSpace(string(http2.ClientPreface[:at])), func(t *testing.T) {
			address := freeAddress(t)
			old := serveWith(t, address, "old", nil, serverOptions{h2c: true})
			raw, err := net.Dial("tcp", address)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			raw.SetDeadline(time.Now().Add(10 * time.Second))
			hc := unwrap(<-old.fresh)
			split := &splitPreface{Conn: raw, at: at, between: func() {
				pendingIs(t, hc, http2.ClientPreface[:at])
				serveWith(t, address, "new", nil, serverOptions{h2c: true}) // a reload begins
			}}
			cc, err := (&http2.Transport{}).NewClientConn(split)
			if err != nil {
				t.Fatal(err)
			}
			req, _ := http.NewRequest(http.MethodPost, "http://test/", strings.NewReader("ping"))
			resp, err := cc.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.ProtoMajor != 2 || string(body) != "old ping" {
				t.Errorf("answer %q over HTTP/%d, want the old server's over HTTP/2", body, resp.ProtoMajor)
			}
			cc.Close()
			if err := <-old.shutdown(); err != nil {
				t.Fatal(err)
			}
			if n := old.view.HandedOff(); n != 0 {
				t.Errorf("handed off %d HTTP/2 connections", n)
			}
			if n := hc.heldBytes(); n > smallBuffer {
				t.Errorf("the HTTP/2 connection keeps %d bytes of buffers, want at most %d", n, smallBuffer)
			}
		})
	}
}

// TestAPRIRequestIsNeverHeldNorHandedOff: a server that serves HTTP/1 only
// reads the HTTP/2 preface as a "PRI * HTTP/2.0" request. Read as a reload
// begins, it is not held for the old server's Shutdown (a hold is for
// HTTP/1 requests the new server will answer) nor handed off: its server
// answers it, as any server without the handoff would.
func TestAPRIRequestIsNeverHeldNorHandedOff(t *testing.T) {
	defer func(limit time.Duration) { holdLimit = limit }(holdLimit)
	holdLimit = time.Minute // a hold would outlast the client's deadline
	address := freeAddress(t)
	paused := newGate(http.StateActive)
	old := serveWith(t, address, "old", nil, serverOptions{wrap: paused.wrap})
	c := dial(t, address)
	c.conn.SetDeadline(time.Now().Add(5 * time.Second))
	hc := unwrap(<-old.fresh)
	io.WriteString(c.conn, "PRI * HTTP/")
	pendingIs(t, hc, "PRI * HTTP/")
	io.WriteString(c.conn, "2.0\r\n\r\n")
	<-paused.reached // net/http read it as a request
	serve(t, address, "new", nil)
	close(paused.open)
	resp, _, err := c.response()
	if err != nil {
		t.Fatalf("no answer to the PRI request (held for the reload?): %v", err)
	}
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("PRI answered %s, want the old server's 400", resp.Status)
	}
	hc.mu.Lock()
	held := hc.held
	hc.mu.Unlock()
	if held {
		t.Error("the PRI request was held")
	}
	if err := <-old.shutdown(); err != nil {
		t.Fatal(err)
	}
	if n := old.view.HandedOff(); n != 0 {
		t.Errorf("handed off %d connections", n)
	}
}

// TestARequestLineSplitAcrossReadsIsFollowed: whether a connection is HTTP/1
// is decided once its first line is whole, whatever reads it came in; a
// line whose beginning looked like a request and whose end does not makes
// the connection one that is never handed off, also after its response
// began (when the bytes read are no longer kept).
func TestARequestLineSplitAcrossReadsIsFollowed(t *testing.T) {
	for _, tc := range []struct {
		reads []string
		http1 bool
	}{
		{[]string{"G", "ET / HT", "TP/1.1\r\nHost: a\r\n\r\n"}, true},
		{[]string{"PRI * HTTP/", "2.0\r\n\r\nSM\r\n\r\n"}, false},
		{[]string{"PR", "I * HTTP/2.0\r\n\r\n"}, false},
		{[]string{"GET / HTTP/", "2.0\r\n\r\n"}, false},
		{[]string{"GET / HTTP/1.", "1x\r\n\r\n"}, false},
	} {
		c := newConn(nil, nil)
		c.hooks = NewServerHooks()
		for _, r := range tc.reads {
			c.mu.Lock()
			c.recordRead([]byte(r))
			c.mu.Unlock()
		}
		c.mu.Lock()
		c.recordWrite([]byte("x")) // a response begins: pending is emptied
		noHandoff := c.noHandoff
		c.mu.Unlock()
		if noHandoff == tc.http1 {
			t.Errorf("%q: never handed off = %v, want %v", tc.reads, noHandoff, !tc.http1)
		}
		if len(c.pending) != 0 {
			t.Errorf("%q: %d bytes still pending after the response began", tc.reads, len(c.pending))
		}
	}
}
