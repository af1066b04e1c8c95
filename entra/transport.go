package entra

import (
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"time"
)

// Every Client without Config.HTTPClient sends through one process-wide
// transport, which outlives config reloads: the identities that use an
// authority share a few connections (HTTP/2 where offered).
const (
	// IdleConnTimeout is how long an idle connection is kept: longer than
	// the refresh interval of Entra's usual 60 to 90 minute tokens, so that
	// a refresh reuses it (TCP keep-alives keep middleboxes from dropping it).
	IdleConnTimeout = 2 * time.Hour
	// MaxIdleConnsPerAuthority bounds the idle connections kept per
	// authority; a burst may open more.
	MaxIdleConnsPerAuthority = 4
)

// sharedHTTPClient is the client of every Client without Config.HTTPClient.
// It follows no redirect: a 307/308 would re-send the secret elsewhere.
var sharedHTTPClient = sync.OnceValue(func() *http.Client {
	return &http.Client{Transport: newSharedTransport(), CheckRedirect: noRedirects}
})

func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// newSharedTransport clones http.DefaultTransport (proxy variables apply,
// but for link-local addresses; HTTP/2 is attempted) and keeps idle
// connections per authority.
func newSharedTransport() *http.Transport {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.Proxy = proxyFromEnvironmentButLinkLocal
	transport.MaxIdleConns = 0 // no process-wide bound; the per-authority one holds
	transport.MaxIdleConnsPerHost = MaxIdleConnsPerAuthority
	transport.IdleConnTimeout = IdleConnTimeout
	transport.ResponseHeaderTimeout = 0 // the per-request context deadline bounds it
	return transport
}

// proxyFromEnvironmentButLinkLocal is http.ProxyFromEnvironment, except that
// a link-local address (the instance metadata service, 169.254.169.254) is
// reached directly: IMDS does not work through a proxy (Azure says to
// bypass it), and a proxy would read its plain-HTTP answers, tokens included.
func proxyFromEnvironmentButLinkLocal(r *http.Request) (*url.URL, error) {
	if ip, err := netip.ParseAddr(r.URL.Hostname()); err == nil && ip.Unmap().IsLinkLocalUnicast() {
		return nil, nil
	}
	return http.ProxyFromEnvironment(r)
}
