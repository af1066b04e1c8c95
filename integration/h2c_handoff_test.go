package integration

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestAnH2CConnectionThroughHandoffIsServedAndNeverHandedOff: an HTTP/2
// connection with prior knowledge (h2c) to a handoff/ site whose preface
// has left only up to "PRI * HTTP/" (which could begin an HTTP/1 request
// line) when a reload starts the new config is served to the end by the
// old config's server and never handed off (caddy_handoff_connections_total
// stays 0), and its request reaches the upstream once, with a token.
func TestAnH2CConnectionThroughHandoffIsServedAndNeverHandedOff(t *testing.T) {
	f := newFleet(t)
	replica := startSidecar(t, handoffCaddyfile, f.env(testClientSecret)...)
	config := reloadedConfig(t, f, replica, handoffCaddyfile, "/v2")
	started := strings.Count(replica.logs(), "starting server loop")

	raw, err := net.Dial("tcp", strings.TrimPrefix(replica.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(30 * time.Second))
	reloaded := make(chan error, 1)
	split := &splitFirstWrite{Conn: raw, at: len("PRI * HTTP/"), between: func() {
		serverHasRead(t, raw)
		go func() { reloaded <- load(replica, config) }()
		waitFor(t, "the new config's server", 30*time.Second, func() error {
			if strings.Count(replica.logs(), "starting server loop") > started {
				return nil
			}
			return errors.New("not started")
		})
	}}
	cc, err := (&http2.Transport{}).NewClientConn(split)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	req, _ := http.NewRequest(http.MethodGet, replica.URL+"/orders/h2c", nil)
	req.Header.Set("X-Request-Id", "h2c")
	resp, err := cc.RoundTrip(req)
	if err != nil {
		t.Fatalf("the h2c request: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
		t.Errorf("the h2c request got %s over HTTP/%d, want 200 over HTTP/2", resp.Status, resp.ProtoMajor)
	}
	cc.Close()
	if err := <-reloaded; err != nil {
		t.Fatal(err)
	}
	reached := 0
	for _, h := range f.upstream.allHeaders() {
		if h.Get("X-Request-Id") == "h2c" {
			reached++
			if !strings.HasPrefix(h.Get("Authorization"), "Bearer ") {
				t.Error("the h2c request reached the upstream without a token")
			}
		}
	}
	if reached != 1 {
		t.Errorf("the h2c request reached the upstream %d times, want once", reached)
	}
	handoffs := metricLines(scrapeMetrics(t, replica), "caddy_handoff_connections_total")
	if len(handoffs) != 1 || !strings.HasSuffix(handoffs[0], " 0") {
		t.Errorf("handoff metrics %q, want no connection handed off", handoffs)
	}
}

// load posts a Caddyfile to the replica's admin API, as a reload does.
func load(replica *sidecar, config string) error {
	status, body, err := postLoad(replica.AdminURL, config)
	if err == nil && status != http.StatusOK {
		err = fmt.Errorf("reload: %d %s", status, body)
	}
	return err
}

// splitFirstWrite is a client connection whose first write leaves in two
// parts: the first at bytes, then, once between has returned, the rest.
type splitFirstWrite struct {
	net.Conn
	at      int
	between func()
	once    sync.Once
}

func (s *splitFirstWrite) Write(p []byte) (int, error) {
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

// serverHasRead waits until the server's end of the loopback connection c
// has no unread bytes in its receive queue (Linux's /proc/net/tcp): what
// the client sent so far was read by the server.
func serverHasRead(t *testing.T, c net.Conn) {
	t.Helper()
	local, remote := c.LocalAddr().(*net.TCPAddr), c.RemoteAddr().(*net.TCPAddr)
	// The server's socket: local address = our remote, remote = our local.
	want := fmt.Sprintf("%s %s", procAddr(remote), procAddr(local))
	waitFor(t, "the server's read", 10*time.Second, func() error {
		f, err := os.Open("/proc/net/tcp")
		if err != nil {
			return err
		}
		defer f.Close()
		lines := bufio.NewScanner(f)
		for lines.Scan() {
			fields := strings.Fields(lines.Text())
			if len(fields) < 5 || fields[1]+" "+fields[2] != want {
				continue
			}
			_, rx, _ := strings.Cut(fields[4], ":")
			if n, err := strconv.ParseUint(rx, 16, 64); err != nil || n != 0 {
				return fmt.Errorf("%s bytes unread", rx)
			}
			return nil
		}
		return errors.New("the server's socket is not listed")
	})
}

// procAddr writes a loopback IPv4 address as /proc/net/tcp does.
func procAddr(a *net.TCPAddr) string {
	ip := a.IP.To4()
	return fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], a.Port)
}
