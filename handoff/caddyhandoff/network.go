package caddyhandoff

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-entra/caddy-entra/handoff"
)

// Network is the network name under which Caddy listens through the
// handoff package: `bind handoff/127.0.0.1`. TLS and HTTP/2 connections are
// served but never handed off.
const Network = "handoff"

func init() {
	caddy.RegisterNetwork(Network, listen)
}

// errNoHost refuses `bind handoff/`, at load (the app's Provision, so that
// `caddy validate` says it too) and when listening.
var errNoHost = fmt.Errorf("%s network: an address without a host would listen on every interface: "+
	"write the host (%s/127.0.0.1), or %s/0.0.0.0 or %s/[::] to mean every interface",
	Network, Network, Network, Network)

// listen is the caddy.ListenerFunc of Network. It refuses an address
// without a host (`bind handoff/`), which would listen on every interface:
// a sidecar meant for loopback would serve the network. It refuses an
// address whose server the handoff app did not hook, which would hand
// nothing off. A host that overlaps an open socket's on the same port is
// refused by the kernel; the error says whose socket that is.
func listen(ctx context.Context, _, host, portRange string, portOffset uint, cfg net.ListenConfig) (any, error) {
	if host == "" {
		return nil, errNoHost
	}
	address, err := caddy.ParseNetworkAddress(caddy.JoinNetworkAddress(Network, host, portRange))
	if err != nil {
		return nil, fmt.Errorf("%s network: %v", Network, err)
	}
	app, err := hookingApp(ctx, address)
	if err != nil {
		return nil, err
	}
	if portOffset >= address.PortRangeSize() {
		return nil, fmt.Errorf("%s network: port offset %d is outside the range %s", Network, portOffset, portRange)
	}
	port := strconv.FormatUint(uint64(address.StartPort+portOffset), 10)
	view, err := handoff.ListenPending(ctx, "tcp", net.JoinHostPort(host, port), cfg)
	if overlap := (*handoff.OverlapError)(nil); errors.As(err, &overlap) {
		return nil, app.explainOverlap(overlap)
	}
	if err != nil {
		return nil, err
	}
	app.opened(view)
	return view, nil
}

// explainOverlap names the sockets that the kernel's refusal e is about:
// this config's own, which no restart helps, or the running config's,
// which close only after this config has started: a reload cannot move a
// socket to a host that overlaps the old one on its port.
func (a *App) explainOverlap(e *handoff.OverlapError) error {
	var own, running []string
	for _, open := range e.Open {
		if a.listensOn(open) {
			own = append(own, Network+"/"+open)
		} else {
			running = append(running, Network+"/"+open)
		}
	}
	if len(own) > 0 {
		return fmt.Errorf("%s network: %s/%s overlaps %s of the same config: the kernel lets no two sockets "+
			"listen on one port where one's host covers the other's: keep one of these binds",
			Network, Network, e.Address, strings.Join(own, ", "))
	}
	return fmt.Errorf("%s network: %s/%s overlaps %s, still open from the running config: "+
		"changing a handoff bind's host on the same port needs a restart",
		Network, Network, e.Address, strings.Join(running, ", "))
}

// listensOn reports whether a's config listens on address (host:port) through
// the handoff network.
func (a *App) listensOn(address string) bool {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return false
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return false
	}
	for hooked := range a.hooked {
		if hooked.Host == host && uint64(hooked.StartPort) <= p && p <= uint64(hooked.EndPort) {
			return true
		}
	}
	return false
}

// hookingApp returns the handoff app of ctx's config, or an error unless it
// hooked the server that listens on address.
func hookingApp(ctx context.Context, address caddy.NetworkAddress) (*App, error) {
	caddyCtx, ok := ctx.(caddy.Context)
	if !ok {
		return nil, fmt.Errorf("%s network: %s: listening outside a Caddy config", Network, address)
	}
	app, err := caddyCtx.AppIfConfigured("handoff")
	if errors.Is(err, caddy.ErrNotConfigured) {
		return nil, fmt.Errorf("%s network: the handoff app, which installs the hooks that hand connections off, "+
			"is not configured: add the global option `handoff` to the Caddyfile, "+
			`or "handoff": {} to the JSON config's apps`, Network)
	}
	if err != nil {
		return nil, fmt.Errorf("%s network: getting the handoff app: %v", Network, err)
	}
	hooking := app.(*App)
	if !hooking.hooked[address] {
		return nil, fmt.Errorf("%s network: %s is not the listen address of an http server: "+
			"connections are handed off between the http app's servers only", Network, address)
	}
	return hooking, nil
}
