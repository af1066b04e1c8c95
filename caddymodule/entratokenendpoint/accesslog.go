package entratokenendpoint

import (
	"net"
	"net/http"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// warnIfAccessLogged warns once, at the first request to a secret-guarded
// endpoint that its server writes to an access log, that the log holds the
// request's X-IDENTITY-HEADER unless a log filter deletes it. A site
// without `log` is never warned about.
func (e *TokenEndpoint) warnIfAccessLogged(r *http.Request) {
	if e.Protocol == ProtocolIMDS || e.accessLogWarned.Load() {
		return
	}
	srv, _ := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	if srv == nil || !accessLogged(srv.Logs, r.Host) || e.accessLogWarned.Swap(true) {
		return
	}
	e.logger.Warn("Caddy's access log shows the X-IDENTITY-HEADER secret of requests to this endpoint, unless a log "+
		"filter deletes request>headers>X-Identity-Header (docs/entra_token_endpoint.md, the secret option)",
		zap.String("protocol", e.Protocol))
}

// accessLogged tells whether a server with logs writes a request for
// hostport to its access log, as caddyhttp.Server decides it.
func accessLogged(logs *caddyhttp.ServerLogConfig, hostport string) bool {
	if logs == nil {
		return false
	}
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	for name := range logs.LoggerNames {
		if certmagic.MatchWildcard(host, name) {
			return true
		}
	}
	for _, skipped := range logs.SkipHosts {
		if certmagic.MatchWildcard(host, skipped) {
			return false
		}
	}
	return !logs.SkipUnmappedHosts
}
