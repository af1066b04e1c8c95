package entraapp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-entra/caddy-entra/entra/entratest"
	"github.com/caddy-entra/caddy-entra/tokencache"
)

// TestReloadNeverChangesTheRunningConfig provisions a second config on the
// same pooled cache, as a reload does, and checks that it cannot change the
// running config (even when the new one is then thrown away), while a
// successful reload keeps the cached token.
func TestReloadNeverChangesTheRunningConfig(t *testing.T) {
	running, emulatorA, _ := newTestApp(t, unitClientSecret)
	first, err := running.Token(context.Background(), "graph-api")
	if err != nil {
		t.Fatal(err)
	}

	// A new config moves graph-api to another identity, then fails to load
	// for an unrelated reason: Caddy cleans it up and keeps the old one.
	failed, emulatorB, _ := newTestApp(t, unitClientSecret)
	if failed.cache != running.cache {
		t.Fatal("configs with the same cache settings must share the pooled cache")
	}
	if _, err := failed.Token(context.Background(), "graph-api"); err != nil {
		t.Fatal(err)
	}
	if err := failed.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if !running.PurgeRejected(context.Background(), "graph-api", first.AccessToken) {
		t.Fatal("purge of the current token did nothing")
	}
	if _, err := running.Token(context.Background(), "graph-api"); err != nil {
		t.Fatal(err)
	}
	if a, b := emulatorA.TokenRequests(), emulatorB.TokenRequests(); a != 2 || b != 1 {
		t.Errorf("token requests A=%d B=%d; want A=2, B=1: the running config must keep its own identity", a, b)
	}

	// A successful reload with the same identity keeps the token: no request.
	reloaded := &App{IdentityConfig: running.IdentityConfig, Applications: running.Applications, logger: running.logger}
	if err := reloaded.provision(caddy.NewReplacer()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reloaded.Cleanup() })
	before := emulatorA.TokenRequests()
	if err := running.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if _, err := reloaded.Token(context.Background(), "graph-api"); err != nil {
		t.Fatal(err)
	}
	if got := emulatorA.TokenRequests() - before; got != 0 {
		t.Errorf("a reload made %d token requests, want 0", got)
	}
}

// TestARequestRacingReleaseGetsATokenOrARetryableError: Caddy cleans an
// old config up while its last requests run. Whatever the interleaving of
// those requests with the release of the config's handles, each gets a
// token or a retryable 503, never a 404 (MICROSOFT_APPLICATION_NOT_FOUND)
// or a panic.
func TestARequestRacingReleaseGetsATokenOrARetryableError(t *testing.T) {
	first, _, _ := newTestApp(t, unitClientSecret)
	var wrong atomic.Value
	for round := range 20 {
		app := first
		if round > 0 { // a reload; the previous config's cache is closed, so a new one
			app = &App{IdentityConfig: first.IdentityConfig, Applications: first.Applications, logger: first.logger}
			if err := app.provision(caddy.NewReplacer()); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := app.Token(context.Background(), "graph-api"); err != nil {
			t.Fatal(err)
		}
		var calls atomic.Int64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					_, err := app.Token(context.Background(), "graph-api")
					// Bursts and pauses, so that no request in flight
					// alternates with a new one arriving.
					time.Sleep(time.Duration(calls.Add(1)%20) * time.Microsecond)
					var te *tokencache.Error
					if err != nil && (!errors.As(err, &te) || AnswerFor(err).Status != http.StatusServiceUnavailable || te.RetryAfter <= 0) {
						wrong.CompareAndSwap(nil, err)
					}
				}
			})
		}
		for calls.Load() < 100 {
			runtime.Gosched()
		}
		if err := app.Cleanup(); err != nil {
			t.Fatal(err)
		}
		for after := calls.Load(); calls.Load() < after+2000; {
			runtime.Gosched()
		}
		close(stop)
		wg.Wait()
		if err := wrong.Load(); err != nil {
			t.Fatalf("round %d: a request racing the release got %v; want a token or a retryable 503", round, err)
		}
	}
}

// TestARequestWhoseCacheClosesGetsARetryableError: a reload that changes
// the cache settings moves to another pooled cache, and the old one closes
// when the old config is cleaned up, under a request of the old config
// waiting for a token: that request gets a retryable 503.
func TestARequestWhoseCacheClosesGetsARetryableError(t *testing.T) {
	old, emulator, _ := newTestApp(t, unitClientSecret)
	emulator.SetResponseDelay(time.Minute) // hold the token request
	result := make(chan error, 1)
	go func() {
		_, err := old.Token(context.Background(), "graph-api")
		result <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for emulator.TokenRequests() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the token request never reached the emulator")
		}
		time.Sleep(time.Millisecond) // the emulator offers no hook
	}
	reloaded := &App{IdentityConfig: old.IdentityConfig, Applications: old.Applications,
		RefreshWindow: caddy.Duration(2 * time.Minute), logger: old.logger}
	if err := reloaded.provision(caddy.NewReplacer()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reloaded.Cleanup() })
	if reloaded.cache == old.cache {
		t.Fatal("other cache settings must make another pooled cache")
	}
	if err := old.Cleanup(); err != nil {
		t.Fatal(err)
	}
	err := <-result
	var te *tokencache.Error
	if !errors.As(err, &te) || AnswerFor(err).Status != http.StatusServiceUnavailable || te.RetryAfter <= 0 {
		t.Fatalf("request on the closed cache: %v, want a retryable 503", err)
	}
}

// refusedReload runs a config of graph-api on a free port, then reloads one
// that listens on a taken port, adds refused-only and prefetches: Caddy
// refuses it and the first config serves on. It returns the emulator and
// the running config's app. Caddy starts a config's apps in map order, so
// the refused config's entra app has started and been stopped again before
// about every other reload: callers repeat it.
func refusedReload(t *testing.T) (*entratest.Emulator, *App) {
	t.Helper()
	emulator, server, err := entratest.NewServer(entratest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(server.Close)
	emulator.AddClient(unitClientID, unitClientSecret)
	taken, err := net.Listen("tcp", "127.0.0.1:0") // no SO_REUSEPORT: Caddy cannot bind beside it
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = taken.Close() })
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	freeAddr := free.Addr().String()
	_ = free.Close()
	config := func(listen string, refused bool) []byte {
		apps := `"graph-api": {"scopes": ["https://graph.microsoft.com/.default"]}`
		if refused {
			apps += `, "refused-only": {"scopes": ["api://refused-only/.default"]}`
		}
		return fmt.Appendf(nil, `{"admin": {"disabled": true}, "apps": {
  "entra": {"authority_host": %q, "tenant_id": %q, "client_id": %q, "client_secret": %q, "prefetch": %t,
            "applications": {%s}},
  "http": {"servers": {"s": {"listen": [%q], "routes": [{"handle": [{"handler": "static_response", "body": "ok"}]}]}}}}}`,
			server.URL, emulator.TenantID(), unitClientID, unitClientSecret, refused, apps, listen)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	if err := caddy.Load(config(freeAddr, false), true); err != nil {
		t.Fatal(err)
	}
	running := runningApp.Load()
	if running == nil || running.Applications["refused-only"] != nil {
		t.Fatal("the loaded config's entra app is not the running one")
	}
	if err := caddy.Load(config(taken.Addr().String(), true), true); err == nil {
		t.Fatal("the reload onto a taken port was not refused")
	}
	return emulator, running
}

// TestARefusedReloadLeavesTheAdminAPIOnTheRunningConfig: after a reload
// Caddy refuses, the admin API answers for the config that serves on, not
// 500 (no entra app running) nor for the refused config.
func TestARefusedReloadLeavesTheAdminAPIOnTheRunningConfig(t *testing.T) {
	for attempt := range 20 {
		t.Run(strconv.Itoa(attempt), func(t *testing.T) {
			refusedReload(t)
			rec := admin(t, http.MethodGet, "/entra/tokens")
			if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"graph-api"`) ||
				strings.Contains(rec.Body.String(), "refused-only") {
				t.Fatalf("after a refused reload, GET /entra/tokens = %d %s; want the running config's applications",
					rec.Code, rec.Body.String())
			}
		})
	}
}

// TestARefusedReloadMakesNoTokenRequest: a config Caddy refuses never
// prefetches, so it neither makes nor schedules a token request (the
// running config, which does not prefetch, has made none); a config Caddy
// commits to does.
func TestARefusedReloadMakesNoTokenRequest(t *testing.T) {
	for attempt := range 20 {
		t.Run(strconv.Itoa(attempt), func(t *testing.T) {
			emulator, running := refusedReload(t)
			if n := emulator.TokenRequests(); n != 0 {
				t.Fatalf("a refused reload made %d token requests", n)
			}
			if next := running.status("graph-api").NextRefreshAt; next != nil {
				t.Fatalf("a refused reload scheduled graph-api's token request for %v", next)
			}
		})
	}
	emulator, running := refusedReload(t)
	issued := make(chan struct{}, 1)
	emulator.OnIssue(func(entratest.Issued) {
		select {
		case issued <- struct{}{}:
		default:
		}
	})
	committed := &App{IdentityConfig: running.IdentityConfig, Applications: running.Applications, Prefetch: true}
	raw, err := json.Marshal(map[string]any{"admin": map[string]any{"disabled": true}, "apps": map[string]any{"entra": committed}})
	if err != nil {
		t.Fatal(err)
	}
	if err := caddy.Load(raw, true); err != nil {
		t.Fatal(err)
	}
	select {
	case <-issued:
	case <-time.After(10 * time.Second):
		t.Fatal("a committed config with prefetch made no token request")
	}
}

// TestAConfigRefusedAfterItCommittedGivesTheAdminAPIBack: Caddy emits
// "started" before it finishes a config's setup (remote admin, config
// loader), whose failure refuses the config after its entra app committed.
// Its cleanup gives the admin API and the cache's logs back to the config
// that serves on.
func TestAConfigRefusedAfterItCommittedGivesTheAdminAPIBack(t *testing.T) {
	emulator, server, err := entratest.NewServer(entratest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(server.Close)
	emulator.AddClient(unitClientID, unitClientSecret)
	config := func(admin, application string) []byte {
		return fmt.Appendf(nil, `{"admin": %s, "apps": {
  "entra": {"authority_host": %q, "tenant_id": %q, "client_id": %q, "client_secret": %q,
            "applications": {%q: {"scopes": ["https://graph.microsoft.com/.default"]}}}}}`,
			admin, server.URL, emulator.TenantID(), unitClientID, unitClientSecret, application)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	if err := caddy.Load(config(`{"disabled": true}`, "graph-api"), true); err != nil {
		t.Fatal(err)
	}
	running := runningApp.Load()
	if running == nil {
		t.Fatal("no running app after the first load")
	}
	if err := caddy.Load(config(`{"disabled": true, "config": {"load": {"module": "no_such_loader"}}}`, "refused-only"), true); err == nil {
		t.Fatal("a config whose loader does not exist was not refused")
	}
	if now := runningApp.Load(); now != running {
		t.Fatalf("after a config refused once it had committed, the admin API acts on %p, want the running config's %p", now, running)
	}
	rec := admin(t, http.MethodGet, "/entra/tokens")
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"graph-api"`) {
		t.Errorf("GET /entra/tokens = %d %s; want the running config's applications", rec.Code, rec.Body.String())
	}
	// A config that stops for good gives it to none.
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	if now := runningApp.Load(); now != nil {
		t.Errorf("after caddy stop, the admin API acts on %p, want none", now)
	}
}
