package entraapp

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/entra"
)

// Injector is a handler that injects an application's token (entra_token).
type Injector interface {
	InjectedApplication() string
}

// warnCertificateBoundRoutes warns about each route that injects the token
// of a mutual-TLS application through a reverse_proxy presenting no client
// certificate: a server binding tokens to it (RFC 8705) refuses them.
func (a *App) warnCertificateBoundRoutes(ctx caddy.Context) {
	mutualTLS := map[string]bool{}
	for _, ra := range a.resolved {
		if ra.Config.ClientAuth == entra.ClientAuthTLS || ra.Config.ClientAuth == entra.ClientAuthSelfSignedTLS {
			mutualTLS[ra.Name] = true
		}
	}
	if len(mutualTLS) == 0 {
		return
	}
	httpApp, err := ctx.AppIfConfigured("http")
	if err != nil {
		return
	}
	if app, ok := httpApp.(*caddyhttp.App); ok {
		for name, srv := range app.Servers {
			a.walkRoutes(srv.Routes, mutualTLS, name, "")
		}
	}
}

// walkRoutes follows routes (and subroutes) in order with injecting, the
// mutual-TLS application whose token is injected so far, and returns it.
func (a *App) walkRoutes(routes caddyhttp.RouteList, mutualTLS map[string]bool, server, injecting string) string {
	for _, route := range routes {
		for _, h := range route.Handlers {
			switch h := h.(type) {
			case Injector:
				injecting = ""
				if mutualTLS[h.InjectedApplication()] {
					injecting = h.InjectedApplication()
				}
			case *caddyhttp.Subroute:
				a.walkRoutes(h.Routes, mutualTLS, server, injecting)
			case *reverseproxy.Handler:
				if injecting != "" && !presentsClientCertificate(h) {
					a.logger.Warn("a route injects the token of an application that authenticates with mutual TLS, "+
						"and its reverse_proxy presents no client certificate: if the server binds its tokens to the "+
						"certificate (cnf x5t#S256), the upstream refuses them; give reverse_proxy the same certificate "+
						"(transport http { tls_client_auth <cert> <key> }, docs/credentials.md)",
						zap.String("server", server), zap.String("application", injecting))
				}
			}
		}
	}
	return injecting
}

func presentsClientCertificate(rp *reverseproxy.Handler) bool {
	t, ok := rp.Transport.(*reverseproxy.HTTPTransport)
	return ok && t.TLS != nil && (t.TLS.ClientCertificateFile != "" || t.TLS.ClientCertificateAutomate != "")
}
