package entraready

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/caddy-entra/caddy-entra/caddymodule/entraapp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("entra_ready", entraapp.Directive[Ready])
	// Before respond, so that a catch-all respond does not shadow it.
	httpcaddyfile.RegisterDirectiveOrder("entra_ready", httpcaddyfile.Before, "respond")
}

// UnmarshalCaddyfile sets up the probe from Caddyfile tokens. Syntax:
//
//	entra_ready [<matcher>] [<application>...]
func (r *Ready) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	r.Applications = append(r.Applications, d.RemainingArgs()...)
	if d.NextBlock(d.Nesting()) {
		return d.Errf("entra_ready: unrecognized option '%s' (it takes application names only)", d.Val())
	}
	return nil
}
