package entraready

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("entra_ready", parseReadyDirective)
	// It answers requests itself: among those handlers, after the auth,
	// header and abort/error directives, and before respond so that a
	// catch-all respond in the same block does not shadow it.
	httpcaddyfile.RegisterDirectiveOrder("entra_ready", httpcaddyfile.Before, "respond")
}

// parseReadyDirective parses the entra_ready directive.
func parseReadyDirective(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	r := new(Ready)
	err := r.UnmarshalCaddyfile(h.Dispenser)
	return r, err
}

// UnmarshalCaddyfile sets up the probe from Caddyfile tokens. Syntax:
//
//	entra_ready [<matcher>] [<application>...]
func (r *Ready) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	r.Applications = append(r.Applications, d.RemainingArgs()...)
	if d.NextBlock(d.Nesting()) {
		return d.Errf("entra_ready: unrecognized option '%s' (it takes application names only)", d.Val())
	}
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Ready)(nil)
