package caddyhandoff

import (
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("handoff", parseGlobalOption)
}

// parseGlobalOption parses the handoff global option, without arguments:
//
//	handoff
func parseGlobalOption(d *caddyfile.Dispenser, existing any) (any, error) {
	d.Next() // the option's name, so that errors say where it is
	if existing != nil {
		return nil, d.Err("handoff: the global option may appear only once")
	}
	if d.NextArg() || d.NextBlock(0) {
		return nil, d.Err("handoff: the global option takes no arguments and no block")
	}
	return httpcaddyfile.App{Name: "handoff", Value: caddyconfig.JSON(App{}, nil)}, nil
}
