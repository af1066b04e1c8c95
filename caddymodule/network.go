package caddymodule

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-entra/caddy-entra/handoff"
)

// HandoffNetwork is the network name under which Caddy listens through the
// handoff package: `bind handoff/127.0.0.1` in a site block. Its TCP socket
// stays open across config reloads, and connections the old config's server
// gives up at a request boundary are answered by the new one, so a reload
// drops no request. Plain HTTP/1.1 only: TLS and HTTP/2 connections are
// served but never handed off.
const HandoffNetwork = "handoff"

func init() {
	caddy.RegisterNetwork(HandoffNetwork, listenHandoff)
}

// hookHandoffServers gives every server of the config's http app that may
// listen on a HandoffNetwork address its handoff.ServerHooks: its ConnState
// and shutdown hooks tell the handoff package what only net/http knows
// (a response finished, a connection hijacked, a request read as a reload
// begins, the server's shutdown begun). It runs while the http app is
// provisioned (from an entra_token handler's Provision), before the servers
// start.
func hookHandoffServers(ctx caddy.Context) {
	appIface, err := ctx.AppIfConfigured("http")
	if err != nil {
		return
	}
	httpApp, ok := appIface.(*caddyhttp.App)
	if !ok {
		return
	}
	for _, srv := range httpApp.Servers {
		if slices.ContainsFunc(srv.Listen, mayBeHandoffAddress) {
			hooks := handoff.NewServerHooks()
			srv.RegisterConnState(hooks.ConnState)
			srv.RegisterOnShutdown(hooks.ShutdownBegun)
		}
	}
}

// mayBeHandoffAddress reports whether a listen address is, or may become
// once its placeholders are replaced, on HandoffNetwork (network names are
// case-insensitive). Hooks on a server without such a listener cost a
// type check per connection state change.
func mayBeHandoffAddress(address string) bool {
	address = strings.ToLower(strings.TrimSpace(address))
	return strings.HasPrefix(address, HandoffNetwork+"/") || strings.Contains(address, "{")
}

// listenHandoff is the caddy.ListenerFunc of HandoffNetwork.
//
// It refuses an address without a host: Caddy passes an empty host for
// `bind handoff/` (or `handoff/{$VAR}` with VAR set but empty), which the
// operating system takes as every interface. A sidecar meant for loopback
// would then serve the network, so a wildcard has to be written out:
// `handoff/0.0.0.0` or `handoff/[::]`.
func listenHandoff(ctx context.Context, _, host, portRange string, portOffset uint, cfg net.ListenConfig) (any, error) {
	if host == "" {
		return nil, fmt.Errorf("%s network: an address without a host would listen on every interface: "+
			"write the host (%s/127.0.0.1), or %s/0.0.0.0 or %s/[::] to mean every interface",
			HandoffNetwork, HandoffNetwork, HandoffNetwork, HandoffNetwork)
	}
	start, end, err := parsePortRange(portRange)
	if err != nil {
		return nil, fmt.Errorf("%s network: %w", HandoffNetwork, err)
	}
	port := start + uint64(portOffset)
	if port > end {
		return nil, fmt.Errorf("%s network: port offset %d is outside the range %s", HandoffNetwork, portOffset, portRange)
	}
	return handoff.Listen(ctx, "tcp", net.JoinHostPort(host, strconv.FormatUint(port, 10)), cfg)
}

// parsePortRange reads "8080" or "8080-8089".
func parsePortRange(portRange string) (start, end uint64, err error) {
	first, last, isRange := strings.Cut(portRange, "-")
	if start, err = strconv.ParseUint(first, 10, 16); err != nil {
		return 0, 0, fmt.Errorf("port %q: want a number from 0 to 65535", first)
	}
	if !isRange {
		return start, start, nil
	}
	if end, err = strconv.ParseUint(last, 10, 16); err != nil || end < start {
		return 0, 0, fmt.Errorf("port range %q: want start-end with start <= end", portRange)
	}
	return start, end, nil
}
