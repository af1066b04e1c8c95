package entraapp

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/entra"
)

// Injector is a handler that injects an application's token into the
// request it hands on (entra_token).
type Injector interface {
	// InjectedApplication is the application whose token it injects.
	InjectedApplication() string
}

// warnCertificateBoundRoutes warns at load about each route where a
// handler injects the token of an application whose identity
// authenticates with mutual TLS (client_auth tls_client_auth or
// self_signed_tls_client_auth) and the reverse_proxy after it presents no
// client certificate: a server that binds its tokens to the certificate
// (RFC 8705: cnf with x5t#S256) refuses them from a connection without
// it. ctx is the app's; the http app is provisioned by the time apps start.
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

// walkRoutes follows routes in order (through subroutes, as handle and
// handle_path make them) with injecting, the mutual-TLS application whose
// token the handlers so far inject, and returns it at the end.
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

// presentsClientCertificate reports whether rp's transport presents a TLS
// client certificate.
func presentsClientCertificate(rp *reverseproxy.Handler) bool {
	t, ok := rp.Transport.(*reverseproxy.HTTPTransport)
	return ok && t.TLS != nil && (t.TLS.ClientCertificateFile != "" || t.TLS.ClientCertificateAutomate != "")
}
