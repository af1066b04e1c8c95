// Package caddymodule registers every Caddy module of the Entra ID token
// injector: importing it (xcaddy build --with
// github.com/caddy-entra/caddy-entra/caddymodule) installs the entra app
// (package entraapp: the global configuration, the token clients and cache,
// the admin API admin.api.entra and the `caddy entra` command) and its HTTP
// handlers entra_token (entratoken), entra_token_endpoint
// (entratokenendpoint) and entra_ready (entraready), each of which uses the
// app's exported API only.
package caddymodule

import (
	_ "github.com/caddy-entra/caddy-entra/caddymodule/entraapp"
	_ "github.com/caddy-entra/caddy-entra/caddymodule/entraready"
	_ "github.com/caddy-entra/caddy-entra/caddymodule/entratoken"
	_ "github.com/caddy-entra/caddy-entra/caddymodule/entratokenendpoint"
)
