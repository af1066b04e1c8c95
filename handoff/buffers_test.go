package handoff

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// largeBody is the size of the body each connection sends once before it
// goes idle in the tests of what an idle connection keeps (60 KB).
const largeBody = 60_000

// heldBytes returns the bytes of buffers c keeps.
func (c *conn) heldBytes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := cap(c.pending) + cap(c.head.buf) + cap(c.replay) + cap(c.stash)
	if c.large != nil {
		n += cap(*c.large)
	}
	return n
}

// tracked returns the connections v's server holds.
func (v *View) tracked() []*conn {
	v.mu.Lock()
	defer v.mu.Unlock()
	var all []*conn
	for c := range v.conns {
		all = append(all, c)
	}
	return all
}

func TestAnIdleConnectionKeepsNoLargeBuffer(t *testing.T) {
	address := freeAddress(t)
	// The handler writes more than maxHead of response in one write, so
	// the response's header block buffer sees a large write too.
	big := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.Write(body)
	})
	g := serve(t, address, "old", big)
	c := dial(t, address)
	c.send("POST", "/x/echo", strings.Repeat("a", largeBody))
	if _, body, err := c.response(); err != nil || len(body) != largeBody {
		t.Fatalf("echo of %d bytes, err %v; want %d bytes", len(body), err, largeBody)
	}
	<-g.idle
	conns := g.view.tracked()
	if len(conns) != 1 {
		t.Fatalf("the server holds %d connections, want 1", len(conns))
	}
	if n := conns[0].heldBytes(); n > smallBuffer {
		t.Errorf("an idle connection that sent a %d-byte body keeps %d bytes of buffers, want at most %d", largeBody, n, smallBuffer)
	}
	// It still follows the next exchange, and moves at a reload.
	c.mustGet("/", "old ping")
	<-g.idle
	serve(t, address, "new", nil)
	if err := <-g.shutdown(); err != nil {
		t.Fatal(err)
	}
	c.mustGet("/", "new ping")
}

// BenchmarkIdleConnectionMemory reports the heap each idle keep-alive
// connection holds (B/idle-conn: server and client side together) after it
// sent one request with a 60 KB body, through a plain listener and through
// a View with its ServerHooks. Run it with -benchtime 1x.
func BenchmarkIdleConnectionMemory(b *testing.B) {
	const conns = 256
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	})
	request := fmt.Sprintf("POST / HTTP/1.1\r\nHost: bench\r\nContent-Length: %d\r\n\r\n%s", largeBody, strings.Repeat("a", largeBody))
	for _, name := range []string{"plain", "handoff"} {
		b.Run(name, func(b *testing.B) {
			var perConn float64
			for range b.N {
				var ln net.Listener
				var err error
				if name == "plain" {
					ln, err = net.Listen("tcp", "127.0.0.1:0")
				} else {
					ln, err = Listen(context.Background(), "tcp", "127.0.0.1:0", net.ListenConfig{})
				}
				if err != nil {
					b.Fatal(err)
				}
				var idle atomic.Int64
				var hooks *ServerHooks
				if name == "handoff" {
					hooks = NewServerHooks()
				}
				srv := &http.Server{Handler: handler, ConnState: func(c net.Conn, s http.ConnState) {
					if hooks != nil {
						hooks.ConnState(c, s)
					}
					if s == http.StateIdle {
						idle.Add(1)
					}
				}}
				go srv.Serve(ln)

				before := liveHeap()
				clients := make([]net.Conn, 0, conns)
				for range conns {
					c, err := net.Dial("tcp", ln.Addr().String())
					if err != nil {
						b.Fatal(err)
					}
					clients = append(clients, c)
					c.SetDeadline(time.Now().Add(10 * time.Second))
					if _, err := io.WriteString(c, request); err != nil {
						b.Fatal(err)
					}
					resp, err := http.ReadResponse(bufio.NewReader(c), nil)
					if err != nil {
						b.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				for deadline := time.Now().Add(10 * time.Second); idle.Load() < conns; time.Sleep(time.Millisecond) {
					if time.Now().After(deadline) {
						b.Fatalf("%d of %d connections went idle", idle.Load(), conns)
					}
				}
				perConn += float64(liveHeap()-before) / conns
				for _, c := range clients {
					c.Close()
				}
				srv.Close()
			}
			b.ReportMetric(perConn/float64(b.N), "B/idle-conn")
		})
	}
}

// liveHeap returns the bytes of live heap objects, after collecting
// twice (the second empties sync.Pools' victim caches).
func liveHeap() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
