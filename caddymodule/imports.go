// Package caddymodule registers every Caddy module of the Entra ID token
// injector: the entra app and its handlers entra_token, entra_token_endpoint
// and entra_ready (xcaddy build --with github.com/caddy-entra/caddy-entra/caddymodule).
package caddymodule

import (
	_ "github.com/caddy-entra/caddy-entra/caddymodule/entraapp"
	_ "github.com/caddy-entra/caddy-entra/caddymodule/entraready"
	_ "github.com/caddy-entra/caddy-entra/caddymodule/entratoken"
	_ "github.com/caddy-entra/caddy-entra/caddymodule/entratokenendpoint"
)
