package caddyhandoff

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"

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
// nothing off.
func listen(ctx context.Context, _, host, portRange string, portOffset uint, cfg net.ListenConfig) (any, error) {
	if host == "" {
		return nil, errNoHost
	}
	address, err := caddy.ParseNetworkAddress(caddy.JoinNetworkAddress(Network, host, portRange))
	if err != nil {
		return nil, fmt.Errorf("%s network: %v", Network, err)
	}
	if err := checkHooked(ctx, address); err != nil {
		return nil, err
	}
	if portOffset >= address.PortRangeSize() {
		return nil, fmt.Errorf("%s network: port offset %d is outside the range %s", Network, portOffset, portRange)
	}
	port := strconv.FormatUint(uint64(address.StartPort+portOffset), 10)
	return handoff.Listen(ctx, "tcp", net.JoinHostPort(host, port), cfg)
}

// checkHooked returns an error unless the handoff app of ctx's config hooked
// the server that listens on address.
func checkHooked(ctx context.Context, address caddy.NetworkAddress) error {
	caddyCtx, ok := ctx.(caddy.Context)
	if !ok {
		return fmt.Errorf("%s network: %s: listening outside a Caddy config", Network, address)
	}
	app, err := caddyCtx.AppIfConfigured("handoff")
	if errors.Is(err, caddy.ErrNotConfigured) {
		return fmt.Errorf("%s network: the handoff app, which installs the hooks that hand connections off, "+
			"is not configured: add the global option `handoff` to the Caddyfile, "+
			`or "handoff": {} to the JSON config's apps`, Network)
	}
	if err != nil {
		return fmt.Errorf("%s network: getting the handoff app: %v", Network, err)
	}
	if !app.(*App).hooked[address] {
		return fmt.Errorf("%s network: %s is not the listen address of an http server: "+
			"connections are handed off between the http app's servers only", Network, address)
	}
	return nil
}
