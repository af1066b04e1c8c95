package caddymodule

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("entra", parseGlobalOption)
	httpcaddyfile.RegisterHandlerDirective("entra_token", parseHandlerDirective)
	httpcaddyfile.RegisterDirectiveOrder("entra_token", httpcaddyfile.Before, "reverse_proxy")
}

// parseGlobalOption parses the entra global option into the entra app.
func parseGlobalOption(d *caddyfile.Dispenser, existing any) (any, error) {
	if existing != nil {
		return nil, d.Err("entra: the global option may appear only once")
	}
	app := new(App)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "entra", Value: caddyconfig.JSON(app, nil)}, nil
}

// UnmarshalCaddyfile sets up the app from Caddyfile tokens. Syntax:
//
//	entra {
//		tenant_id      <tenant>
//		client_id      <client>
//		client_secret  <secret>
//		authority_host <url>
//		token_endpoint <url>
//		refresh_window <duration>
//		redis <url> {
//			key_prefix <prefix>
//		}
//		application <name> [<scope>...] {
//			scope <scope> [<scope>...]
//		}
//	}
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume option name
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		option := d.Val()
		switch option {
		case "tenant_id":
			if err := singleArg(d, &a.TenantID); err != nil {
				return err
			}
		case "client_id":
			if err := singleArg(d, &a.ClientID); err != nil {
				return err
			}
		case "client_secret":
			if err := singleArg(d, &a.ClientSecret); err != nil {
				return err
			}
		case "authority_host":
			if err := singleArg(d, &a.AuthorityHost); err != nil {
				return err
			}
		case "token_endpoint":
			if err := singleArg(d, &a.TokenEndpoint); err != nil {
				return err
			}
		case "refresh_window":
			var raw string
			if err := singleArg(d, &raw); err != nil {
				return err
			}
			window, err := caddy.ParseDuration(raw)
			if err != nil {
				return d.Errf("refresh_window: %v", err)
			}
			if window <= 0 {
				return d.Errf("refresh_window: must be positive")
			}
			a.RefreshWindow = caddy.Duration(window)
		case "redis":
			if a.Redis != nil {
				return d.Err("redis: may appear only once")
			}
			redis, err := parseRedis(d)
			if err != nil {
				return err
			}
			a.Redis = redis
		case "application":
			if err := a.parseApplication(d); err != nil {
				return err
			}
		default:
			return d.Errf("unrecognized entra option '%s'", option)
		}
	}
	return nil
}

// singleArg reads exactly one argument into dest; the option must not be
// given twice.
func singleArg(d *caddyfile.Dispenser, dest *string) error {
	option := d.Val()
	if *dest != "" {
		return d.Errf("%s: may appear only once", option)
	}
	if !d.NextArg() {
		return d.ArgErr()
	}
	*dest = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

// parseRedis parses `redis <url> { key_prefix <prefix> }`.
func parseRedis(d *caddyfile.Dispenser) (*RedisConfig, error) {
	redis := new(RedisConfig)
	if !d.NextArg() {
		return nil, d.Errf("redis: a redis:// or rediss:// URL is required")
	}
	redis.URL = d.Val()
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "key_prefix":
			if err := singleArg(d, &redis.KeyPrefix); err != nil {
				return nil, err
			}
		default:
			return nil, d.Errf("unrecognized redis option '%s'", d.Val())
		}
	}
	return redis, nil
}

// parseApplication parses `application <name> [<scope>...] { scope <scope>... }`.
func (a *App) parseApplication(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.Errf("application: a name is required")
	}
	name := d.Val()
	if _, dup := a.Applications[name]; dup {
		return d.Errf("application %s: defined twice", name)
	}
	app := &Application{Scopes: d.RemainingArgs()}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "scope":
			scopes := d.RemainingArgs()
			if len(scopes) == 0 {
				return d.ArgErr()
			}
			app.Scopes = append(app.Scopes, scopes...)
		default:
			return d.Errf("unrecognized application option '%s'", d.Val())
		}
	}
	if len(app.Scopes) == 0 {
		return d.Errf("application %s: at least one scope is required", name)
	}
	if a.Applications == nil {
		a.Applications = make(map[string]*Application)
	}
	a.Applications[name] = app
	return nil
}

// parseHandlerDirective parses the entra_token directive.
func parseHandlerDirective(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	handler := new(Handler)
	err := handler.UnmarshalCaddyfile(h.Dispenser)
	return handler, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	entra_token [<matcher>] <application>
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if !d.NextArg() {
		return d.Errf("entra_token: an application name is required")
	}
	h.Application = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		return d.Errf("unrecognized entra_token option '%s'", d.Val())
	}
	return nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*App)(nil)
	_ caddyfile.Unmarshaler = (*Handler)(nil)
)
