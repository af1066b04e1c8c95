// Package caddyhandoff makes the handoff package a Caddy feature: the
// listener network "handoff" (`bind handoff/127.0.0.1`), and the app
// "handoff" (global option `handoff`) that gives every http server
// listening on it the ServerHooks without which nothing is handed off.
package caddyhandoff

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/handoff"
)

func init() {
	caddy.RegisterModule(new(App))
}

// App is the handoff app, without options. At provisioning it gives each
// http server that listens on a handoff/ address a handoff.ServerHooks
// (Caddy applies a server's hooks before it listens, so a listener cannot).
// Its metrics: caddy_handoff_connections_total and
// caddy_handoff_held_requests_total.
type App struct {
	hooked map[caddy.NetworkAddress]bool // the handoff/ addresses of the servers hooked
	logger *zap.Logger

	mu      sync.Mutex
	views   []*handoff.View // opened for this config's servers
	started bool            // Caddy emitted the config's started event
}

// CaddyModule returns the Caddy module information.
func (*App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "handoff", New: func() caddy.Module { return new(App) }}
}

// Provision hooks the http servers that listen on handoff/ addresses,
// registers the metrics, has the config's Views committed on its started
// event and closed when it is cancelled.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	a.closeViewsWhenDone(ctx)
	// The Views of this config's servers take connections from the running
	// config's only once every app has started: a config refused at any
	// app's Start never takes one, whatever the order of the apps.
	events, err := ctx.App("events")
	if err == nil {
		err = events.(*caddyevents.App).On("started", committer{a})
	}
	if err != nil {
		return fmt.Errorf("subscribing to the config's started event: %v", err)
	}
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering metrics: %v", err)
	}
	a.hooked = make(map[caddy.NetworkAddress]bool)
	httpApp, err := ctx.AppIfConfigured("http")
	if errors.Is(err, caddy.ErrNotConfigured) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("getting the http app: %v", err)
	}
	// The http app is provisioned: its placeholders are replaced.
	for name, srv := range httpApp.(*caddyhttp.App).Servers {
		var hooks *handoff.ServerHooks
		for _, listen := range srv.Listen {
			address, err := caddy.ParseNetworkAddress(listen)
			if err != nil {
				return fmt.Errorf("server %s: parsing listen address %q: %v", name, listen, err)
			}
			if address.Network != Network {
				continue
			}
			if address.Host == "" {
				return fmt.Errorf("server %s: %w", name, errNoHost)
			}
			if hooks == nil {
				hooks = handoff.NewServerHooks()
				srv.RegisterConnState(hooks.ConnState)
				srv.RegisterOnShutdown(hooks.ShutdownBegun)
			}
			a.hooked[address] = true
		}
	}
	return nil
}

// Start warns when no server listens on a handoff/ address.
func (a *App) Start() error {
	if len(a.hooked) == 0 {
		a.logger.Warn("no http server listens on a handoff/ address: the handoff app has nothing to do")
	}
	return nil
}

// Stop does nothing: the sockets belong to the servers' listeners.
func (*App) Stop() error { return nil }

// closeViewsWhenDone closes the Views of this config's servers when ctx,
// the config's, is cancelled. Caddy cancels it before any module's
// Cleanup, which it runs in no set order: the http app's stops the servers
// of a config that failed to start only after shutdown_delay. Cleanup
// closes them at the latest.
func (a *App) closeViewsWhenDone(ctx context.Context) {
	context.AfterFunc(ctx, func() { _ = a.Cleanup() })
}

// opened notes a View opened for one of this config's servers; once the
// config has started, it commits it at once.
func (a *App) opened(v *handoff.View) {
	a.mu.Lock()
	a.views = append(a.views, v)
	started := a.started
	a.mu.Unlock()
	if started {
		v.Commit()
	}
}

// committer commits the App's Views on Caddy's "started" event, which Caddy
// emits once every app of the config has started.
type committer struct{ app *App }

// Handle implements caddyevents.Handler.
func (c committer) Handle(_ context.Context, e caddy.Event) error {
	if e.Origin() == nil { // Caddy's own, not a module's
		c.app.mu.Lock()
		c.app.started = true
		views := slices.Clone(c.app.views)
		c.app.mu.Unlock()
		for _, v := range views {
			v.Commit()
		}
	}
	return nil
}

// Cleanup closes the Views of this config's servers when the config is
// unloaded, if the cancel of its context has not (see Provision): a
// refused config's servers are stopped only after shutdown_delay, and that
// stop only begins their Shutdown, while its Views, pending, hold the
// socket's accept queue. After a config ran, its servers' Shutdown has
// closed them already.
func (a *App) Cleanup() error {
	a.mu.Lock()
	views := a.views
	a.views = nil
	a.mu.Unlock()
	for _, v := range views {
		v.Close()
	}
	return nil
}

// collectors are made once per process and registered on each config's
// registry, so that they carry over reloads.
var collectors = sync.OnceValue(func() []prometheus.Collector {
	const ns, sub = "caddy", "handoff"
	return []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "connections_total",
			Help: "Connections on handoff/ addresses that a reloaded config's server gave up and the new one took over.",
		}, func() float64 { handedOff, _ := handoff.Stats(); return float64(handedOff) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "held_requests_total",
			Help: "Requests read as a reload began that were held until the old server stopped, then answered by the new one.",
		}, func() float64 { _, held := handoff.Stats(); return float64(held) }),
	}
})

func registerMetrics(registry *prometheus.Registry) error {
	if registry == nil {
		return nil
	}
	for _, c := range collectors() {
		var already prometheus.AlreadyRegisteredError
		if err := registry.Register(c); err != nil && !errors.As(err, &already) {
			return err
		}
	}
	return nil
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
