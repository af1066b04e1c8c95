// Package caddyentra is the whole sidecar as one Caddy plugin: importing it
// registers every module of this repository, as caddy-l4's root package
// does for its own, so that
//
//	xcaddy build --with github.com/caddy-entra/caddy-entra
//
// is the whole install. It registers the entra app, the entra_token,
// entra_token_endpoint and entra_ready handlers (packages under caddymodule) and
// the handoff app and listener network (package handoff/caddyhandoff),
// which every shipped config listens through. Each of those packages still
// builds alone, so builds that name them keep working.
package caddyentra

import (
	_ "github.com/caddy-entra/caddy-entra/caddymodule"
	_ "github.com/caddy-entra/caddy-entra/handoff/caddyhandoff"
)
