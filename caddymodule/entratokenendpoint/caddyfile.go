package entratokenendpoint

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/caddy-entra/caddy-entra/caddymodule/entraapp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("entra_token_endpoint", entraapp.Directive[TokenEndpoint])
	// Before respond, so that a catch-all respond does not shadow it.
	httpcaddyfile.RegisterDirectiveOrder("entra_token_endpoint", httpcaddyfile.Before, "respond")
}

// UnmarshalCaddyfile sets up the endpoint from Caddyfile tokens. Syntax:
//
//	entra_token_endpoint [<matcher>] record|app_service|imds {
//		secret <value>
//		application <name>...
//		resource <resource> <application>
//		allow_remote
//	}
func (e *TokenEndpoint) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	if !d.NextArg() {
		return d.Errf("entra_token_endpoint: a protocol is required: record, app_service or imds")
	}
	e.Protocol = d.Val()
	switch e.Protocol {
	case ProtocolRecord, ProtocolAppService, ProtocolIMDS:
	default:
		return d.Errf("entra_token_endpoint: unknown protocol '%s' (record, app_service or imds)", e.Protocol)
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch option := d.Val(); option {
		case "secret":
			if err := entraapp.SecretArg(d, &e.Secret); err != nil {
				return err
			}
		case "application":
			names := d.RemainingArgs()
			if len(names) == 0 {
				return d.ArgErr()
			}
			e.Applications = append(e.Applications, names...)
		case "resource":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.Errf("resource: want <resource> <application>")
			}
			if _, dup := e.Resources[args[0]]; dup {
				return d.Errf("resource %s: mapped twice", args[0])
			}
			if e.Resources == nil {
				e.Resources = make(map[string]string)
			}
			e.Resources[args[0]] = args[1]
		case "allow_remote":
			if err := entraapp.FlagArg(d, &e.AllowRemote); err != nil {
				return err
			}
		default:
			return entraapp.UnrecognizedOption(d, "entra_token_endpoint")
		}
	}
	return nil
}
