package entra

import (
	"net/http"
	"sync"
	"time"
)

// Connections to token endpoints. Every Client whose Config.HTTPClient is
// nil sends through one process-wide transport: its pools keep connections
// per authority (scheme, host and port), so all the applications and
// identities that use an authority share a few connections, HTTP/2 where
// the authority offers it, instead of one transport and one TLS handshake
// each. The transport outlives Caddy's config reloads.
const (
	// IdleConnTimeout is how long an idle connection to a token endpoint is
	// kept: longer than the refresh interval of Entra's usual 60 to 90
	// minute tokens, so that a refresh reuses it unless the server or a
	// middlebox closed it (TCP keep-alives, every 15 s by Go's default, keep
	// middleboxes from dropping it silently).
	IdleConnTimeout = 2 * time.Hour
	// MaxIdleConnsPerAuthority bounds the idle connections kept per
	// authority; a burst may open more, which close when it is over.
	MaxIdleConnsPerAuthority = 4
)

// sharedHTTPClient is the client of every Client without Config.HTTPClient.
// Redirects are not followed: a 307/308 would re-send the form, secret
// included, to wherever the redirect points.
var sharedHTTPClient = sync.OnceValue(func() *http.Client {
	return &http.Client{Transport: newSharedTransport(), CheckRedirect: noRedirects}
})

// noRedirects makes a client return a redirect as the answer.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// newSharedTransport clones http.DefaultTransport (proxy environment
// variables apply, HTTP/2 is attempted over TLS) and keeps idle connections
// per authority for IdleConnTimeout.
func newSharedTransport() *http.Transport {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConns = 0 // no process-wide bound; the per-authority one holds
	transport.MaxIdleConnsPerHost = MaxIdleConnsPerAuthority
	transport.IdleConnTimeout = IdleConnTimeout
	transport.ResponseHeaderTimeout = 0 // the per-request context deadline bounds it
	return transport
}
