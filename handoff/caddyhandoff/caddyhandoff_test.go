package caddyhandoff

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddy-entra/caddy-entra/handoff"
	"github.com/caddy-entra/caddy-entra/internal/testproc"
)

// site is a Caddyfile (admin off) with globals in its global options and
// one site on port that binds bind and answers answer.
func site(globals string, port int, bind, answer string) string {
	return fmt.Sprintf("{\n\tadmin off\n\tpersist_config off\n%s}\n:%d {\n\tbind %s\n\trespond %q\n}\n", globals, port, bind, answer)
}

// load adapts caddyfile and runs it, as a reload does when Caddy runs.
func load(t *testing.T, caddyfile string) error {
	t.Helper()
	config, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
	if err != nil {
		t.Fatalf("adapting:\n%s\n%v", caddyfile, err)
	}
	return caddy.Load(config, true)
}

// freePort is a loopback port no other part of this test process was given.
var freePort = testproc.FreePort

// keepAlive is one raw HTTP/1.1 connection, so that a test knows its
// requests share it (Go's client would redial and retry a GET silently).
type keepAlive struct {
	conn net.Conn
	r    *bufio.Reader
}

func dial(t *testing.T, port int) *keepAlive {
	t.Helper()
	return dialHost(t, "127.0.0.1", port)
}

func dialHost(t *testing.T, host string, port int) *keepAlive {
	t.Helper()
	c, err := net.Dial("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &keepAlive{conn: c, r: bufio.NewReader(c)}
}

// get sends a GET and returns the body answered, or what went wrong.
func (k *keepAlive) get() string {
	if _, err := io.WriteString(k.conn, "GET / HTTP/1.1\r\nHost: test\r\n\r\n"); err != nil {
		return err.Error()
	}
	resp, err := http.ReadResponse(k.r, nil)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// TestBindHandoffHandsOffWithNoOtherApp: with the handoff global option, a
// keep-alive connection to the first config is answered by the second
// after a reload, in a config with no app but http and handoff.
func TestBindHandoffHandsOffWithNoOtherApp(t *testing.T) {
	t.Cleanup(func() { _ = caddy.Stop() })
	port := freePort(t)
	if err := load(t, site("\thandoff\n", port, "handoff/127.0.0.1", "first")); err != nil {
		t.Fatal(err)
	}
	c := dial(t, port)
	if got := c.get(); got != "first" {
		t.Fatalf("answered %q before the reload", got)
	}
	before, _ := handoff.Stats()
	if err := load(t, site("\thandoff\n", port, "handoff/127.0.0.1", "second")); err != nil {
		t.Fatal(err)
	}
	if got := c.get(); got != "second" {
		t.Fatalf("the connection answered %q after the reload, want the new config's", got)
	}
	if after, _ := handoff.Stats(); after != before+1 {
		t.Errorf("connections handed off: %d -> %d, want one more", before, after)
	}
}

// TestBindHandoffWithoutTheAppIsRefusedAtLoad: a server on a handoff/
// address without the hooks would only share the socket and hand nothing
// off; such a config is refused, naming what to add, and a reload to it
// leaves the running config serving.
func TestBindHandoffWithoutTheAppIsRefusedAtLoad(t *testing.T) {
	t.Cleanup(func() { _ = caddy.Stop() })
	port := freePort(t)
	if err := load(t, site("\thandoff\n", port, "handoff/127.0.0.1", "running")); err != nil {
		t.Fatal(err)
	}
	err := load(t, site("", port, "handoff/127.0.0.1", "unhooked"))
	if err == nil || !strings.Contains(err.Error(), "add the global option `handoff`") {
		t.Fatalf("err = %v, want the load refused, naming the handoff global option", err)
	}
	if got := dial(t, port).get(); got != "running" {
		t.Errorf("after the refused reload, answered %q", got)
	}
}

// TestBindHandoffWithoutHostIsRefusedAtLoad loads whole Caddyfiles: Caddy
// hands `bind handoff/` to the network with an empty host, and so does an
// empty variable with a default, since {$VAR:default} keeps a set but
// empty value. Both must fail to load rather than listen on every
// interface; a written host loads and serves.
func TestBindHandoffWithoutHostIsRefusedAtLoad(t *testing.T) {
	t.Setenv("CADDY_HANDOFF_TEST_BIND", "")
	t.Cleanup(func() { _ = caddy.Stop() })
	port := freePort(t)
	for _, bind := range []string{"handoff/", "handoff/{$CADDY_HANDOFF_TEST_BIND:127.0.0.1}"} {
		err := load(t, site("\thandoff\n", port, bind, "ok"))
		if err == nil || !strings.Contains(err.Error(), "would listen on every interface") {
			t.Errorf("bind %s: err = %v, want the load refused for listening on every interface", bind, err)
		}
		_ = caddy.Stop()
	}
	// `caddy validate` (provisioning, no listener) says it too.
	config, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(site("\thandoff\n", port, "handoff/", "ok")), nil)
	if err != nil {
		t.Fatal(err)
	}
	var cfg caddy.Config
	if err := json.Unmarshal(config, &cfg); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Validate(&cfg); err == nil || !strings.Contains(err.Error(), "would listen on every interface") {
		t.Errorf("caddy validate of bind handoff/: %v, want it refused", err)
	}
	if err := load(t, site("\thandoff\n", port, "handoff/127.0.0.1", "ok")); err != nil {
		t.Fatalf("bind handoff/127.0.0.1: %v", err)
	}
	if got := dial(t, port).get(); got != "ok" {
		t.Errorf("bind handoff/127.0.0.1 answered %q", got)
	}
}

// TestAPortRangeListensOnEachPort: a listen address with a port range
// gets one socket per port, each hooked.
func TestAPortRangeListensOnEachPort(t *testing.T) {
	t.Cleanup(func() { _ = caddy.Stop() })
	var first int
	for first = freePort(t); ; first = freePort(t) { // two free ports in a row
		if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", first+1)); err == nil {
			l.Close()
			break
		}
	}
	config := fmt.Sprintf(`{"admin": {"disabled": true}, "apps": {"handoff": {}, "http": {"servers": {"s": {
		"listen": ["handoff/127.0.0.1:%d-%d"],
		"routes": [{"handle": [{"handler": "static_response", "body": "ok"}]}]}}}}}`, first, first+1)
	if err := caddy.Load([]byte(config), true); err != nil {
		t.Fatal(err)
	}
	for _, port := range []int{first, first + 1} {
		if got := dial(t, port).get(); got != "ok" {
			t.Errorf("port %d answered %q", port, got)
		}
	}
}

// server is a JSON config (admin off) with the handoff app and one http
// server that listens on listen and answers answer.
func server(answer string, listen ...string) []byte {
	addresses, _ := json.Marshal(listen)
	return fmt.Appendf(nil, `{"admin": {"disabled": true}, "apps": {"handoff": {}, "http": {"servers": {"s": {
		"listen": %s,
		"routes": [{"handle": [{"handler": "static_response", "body": %q}]}]}}}}}`, addresses, answer)
}

// TestChangingABindsHostOnItsPortIsRefusedAndTheRunningConfigServes: the
// kernel refuses a socket whose host overlaps the running config's on the
// same port, which stays open until the new config has started. The
// reload is refused with an error naming both addresses and the restart it
// needs, and the running config goes on serving its connections, including
// those that had moved to the new config's server on a port both share.
func TestChangingABindsHostOnItsPortIsRefusedAndTheRunningConfigServes(t *testing.T) {
	t.Cleanup(func() { _ = caddy.Stop() })
	for _, tc := range []struct{ from, to string }{
		{"127.0.0.1", "0.0.0.0"},   // widened
		{"0.0.0.0", "127.0.0.1"},   // narrowed
		{"localhost", "127.0.0.1"}, // the same address, written otherwise
	} {
		shared, moved := freePort(t), freePort(t)
		running := server("running", fmt.Sprintf("handoff/127.0.0.1:%d", shared), fmt.Sprintf("handoff/%s:%d", tc.from, moved))
		if err := caddy.Load(running, true); err != nil {
			t.Fatal(err)
		}
		onShared, onMoved := dial(t, shared), dial(t, moved)
		for _, c := range []*keepAlive{onShared, onMoved} {
			if got := c.get(); got != "running" {
				t.Fatalf("%s: answered %q before the reload", tc.from, got)
			}
		}

		err := caddy.Load(server("new", fmt.Sprintf("handoff/127.0.0.1:%d", shared), fmt.Sprintf("handoff/%s:%d", tc.to, moved)), true)
		want := fmt.Sprintf("handoff/%s:%d overlaps handoff/%s:%d, still open from the running config: "+
			"changing a handoff bind's host on the same port needs a restart", tc.to, moved, tc.from, moved)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s -> %s: err = %v, want it to say %q", tc.from, tc.to, err, want)
		}
		for name, c := range map[string]*keepAlive{
			"the shared port's keep-alive connection": onShared, "the moved port's keep-alive connection": onMoved,
			"a new connection to the shared port": dial(t, shared), "a new connection to the moved port": dial(t, moved),
		} {
			if got := c.get(); got != "running" {
				t.Errorf("%s -> %s: after the refused reload, %s answered %q", tc.from, tc.to, name, got)
			}
		}
		_ = caddy.Stop()
	}
}

// TestOverlappingBindsOfOneConfigAreRefused: two hosts of one config that
// overlap on a port are refused as such, not as a reload needing a restart.
func TestOverlappingBindsOfOneConfigAreRefused(t *testing.T) {
	t.Cleanup(func() { _ = caddy.Stop() })
	port := freePort(t)
	err := caddy.Load(server("ok", fmt.Sprintf("handoff/127.0.0.1:%d", port), fmt.Sprintf("handoff/0.0.0.0:%d", port)), true)
	want := fmt.Sprintf("handoff/0.0.0.0:%d overlaps handoff/127.0.0.1:%d of the same config", port, port)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("err = %v, want it to say %q", err, want)
	}
}

// TestANonOverlappingHostOnTheSamePortReloads: hosts the kernel lets
// listen side by side on one port need no restart.
func TestANonOverlappingHostOnTheSamePortReloads(t *testing.T) {
	t.Cleanup(func() { _ = caddy.Stop() })
	port := freePort(t)
	if err := caddy.Load(server("running", fmt.Sprintf("handoff/127.0.0.1:%d", port)), true); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Load(server("new", fmt.Sprintf("handoff/127.0.0.2:%d", port)), true); err != nil {
		t.Fatalf("reload from 127.0.0.1 to 127.0.0.2 on one port: %v", err)
	}
	if got := dialHost(t, "127.0.0.2", port).get(); got != "new" {
		t.Errorf("127.0.0.2 answered %q", got)
	}
}

func TestListenOutsideACaddyConfigIsRefused(t *testing.T) {
	_, err := listen(context.Background(), Network, "127.0.0.1", "0", 0, net.ListenConfig{})
	if err == nil || !strings.Contains(err.Error(), "outside a Caddy config") {
		t.Fatalf("err = %v", err)
	}
}

func TestGlobalOption(t *testing.T) {
	for _, tc := range []struct {
		globals string
		want    string // in the JSON, or in the error
	}{
		{"\thandoff\n", `"handoff":{}`},
		{"\thandoff now\n", "takes no arguments"},
		{"\thandoff {\n\t\tgrace 1s\n\t}\n", "takes no arguments"},
		{"\thandoff\n\thandoff\n", "only once, at Caddyfile:5"}, // the second one's line
	} {
		config, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(site(tc.globals, 8080, "handoff/127.0.0.1", "ok")),
			map[string]any{"filename": "Caddyfile"})
		if got := string(config) + fmt.Sprint(err); !strings.Contains(got, tc.want) {
			t.Errorf("%q: got %s, want %s", tc.globals, got, tc.want)
		}
	}
}

func TestMetricsAreNamedForHandoff(t *testing.T) {
	registry := prometheus.NewPedanticRegistry()
	for range 2 { // each config registers them on its own registry, or again
		if err := registerMetrics(registry); err != nil {
			t.Fatal(err)
		}
	}
	families, err := registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, family := range families {
		names = append(names, family.GetName())
	}
	if want := "caddy_handoff_connections_total caddy_handoff_held_requests_total"; strings.Join(names, " ") != want {
		t.Errorf("metrics %v, want %s", names, want)
	}
}

// TestCleanupClosesTheViewsOfItsConfig: an unloaded config's Views close
// with its handoff app's Cleanup, which Caddy runs before a refused reload
// returns, not whenever its servers' Shutdown runs.
func TestCleanupClosesTheViewsOfItsConfig(t *testing.T) {
	view, err := handoff.Listen(context.Background(), "tcp", "127.0.0.1:0", net.ListenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	app := new(App)
	app.opened(view)
	if err := app.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if _, err := view.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Cleanup: %v, want net.ErrClosed", err)
	}
}

// TestTheViewsCloseWhenTheConfigIsCancelled: Caddy cancels a config's
// context before it runs the modules' Cleanup in no set order (the http
// app's waits out shutdown_delay first): the Views close at the cancel.
func TestTheViewsCloseWhenTheConfigIsCancelled(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	app := new(App)
	app.closeViewsWhenDone(ctx) // as Provision does
	view, err := handoff.Listen(context.Background(), "tcp", "127.0.0.1:0", net.ListenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { view.Close() })
	app.opened(view)
	cancel() // runs no Cleanup of app: it was not loaded through ctx
	accepted := make(chan error, 1)
	go func() {
		_, err := view.Accept()
		accepted <- err
	}()
	select {
	case err := <-accepted:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after the cancel: %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the View is still open 10 s after its config was cancelled")
	}
}

// failsToStart is an app whose Start fails, refusing the config it is in.
type failsToStart struct{}

func (failsToStart) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "handoff_test_fails_to_start", New: func() caddy.Module { return new(failsToStart) }}
}
func (failsToStart) Start() error { return errors.New("refusing to start") }
func (failsToStart) Stop() error  { return nil }

func init() { caddy.RegisterModule(failsToStart{}) }

// TestAReloadRefusedAtAnotherAppsStartTakesNoConnection: when another app
// of the new config fails to start after the http app has started, Caddy
// stops the http app (which waits out shutdown_delay) before it cancels the
// config. The new server's Views take connections only once every app has
// started: the refused one answers none, whatever the order of the apps.
func TestAReloadRefusedAtAnotherAppsStartTakesNoConnection(t *testing.T) {
	t.Cleanup(func() { _ = caddy.Stop() })
	port := freePort(t)
	config := func(answer, extraApp string) []byte {
		return fmt.Appendf(nil, `{"admin": {"disabled": true}, "apps": {"handoff": {}, %s "http": {"shutdown_delay": "300ms",
			"servers": {"s": {"listen": ["handoff/127.0.0.1:%d"],
			"routes": [{"handle": [{"handler": "static_response", "body": %q}]}]}}}}}`, extraApp, port, answer)
	}
	if err := caddy.Load(config("running", ""), true); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	for i := range 6 { // the apps start in map order: the http app first in about 5 of 8
		answers := make(map[string]int)
		stop, stopped := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(stopped)
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
				if err != nil {
					answers[err.Error()]++
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				answers[string(body)]++
			}
		}()
		err := caddy.Load(config("refused", `"handoff_test_fails_to_start": {},`), true)
		close(stop)
		<-stopped
		if err == nil {
			t.Fatal("the reload was not refused")
		}
		if len(answers) != 1 || answers["running"] == 0 {
			t.Errorf("reload %d: answers during it %v, want the running config's only", i, answers)
		}
	}
}
