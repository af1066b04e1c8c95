// Command caddy is Caddy with its standard modules, the Entra ID token
// injector (the entra app and the entra_token handler) and the handoff
// listener network (the handoff app).
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddy-entra/caddy-entra"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

func main() {
	caddycmd.Main()
}
