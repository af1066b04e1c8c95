package entratoken

import (
	"strconv"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/caddy-entra/caddy-entra/caddymodule/entraapp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("entra_token", entraapp.Directive[Handler])
	httpcaddyfile.RegisterDirectiveOrder("entra_token", httpcaddyfile.Before, "reverse_proxy")
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	entra_token [<matcher>] <application> {
//		header <name>
//		purge_on_status [<status>...]
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	if !d.NextArg() {
		return d.Errf("entra_token: an application name is required")
	}
	h.Application = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "header":
			if err := entraapp.SingleArg(d, &h.Header); err != nil {
				return err
			}
		case "purge_on_status":
			if h.PurgeOnStatus != nil {
				return d.Err("purge_on_status: may appear only once")
			}
			statuses := []int{} // none: purging disabled
			for _, raw := range d.RemainingArgs() {
				status, err := strconv.Atoi(raw)
				if err != nil || status < 400 || status > 599 {
					return d.Errf("purge_on_status: %q is not an HTTP error status (400-599)", raw)
				}
				statuses = append(statuses, status)
			}
			h.PurgeOnStatus = &statuses
		default:
			return entraapp.UnrecognizedOption(d, "entra_token")
		}
	}
	return nil
}
