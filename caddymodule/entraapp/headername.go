package entraapp

import (
	"fmt"
	"net/http"
	"net/textproto"

	"golang.org/x/net/http/httpguts"
)

// forbiddenHeaders are the names a token may not travel in: the hop-by-hop
// and framing fields that net/http or reverse_proxy strip, rewrite or
// interpret (the token would never arrive, or would break the request),
// and the X-Forwarded-* fields reverse_proxy sets itself.
var forbiddenHeaders = map[string]string{
	"Alt-Svc":             "hop-by-hop",
	"Connection":          "hop-by-hop",
	"Proxy-Connection":    "hop-by-hop",
	"Keep-Alive":          "hop-by-hop",
	"Proxy-Authenticate":  "hop-by-hop",
	"Proxy-Authorization": "hop-by-hop",
	"Te":                  "hop-by-hop",
	"Trailer":             "hop-by-hop",
	"Transfer-Encoding":   "framing",
	"Upgrade":             "hop-by-hop",
	"Host":                "framing",
	"Content-Length":      "framing",
	"Expect":              "framing",
	"X-Forwarded-For":     "set by reverse_proxy",
	"X-Forwarded-Proto":   "set by reverse_proxy",
	"X-Forwarded-Host":    "set by reverse_proxy",
}

// CheckHeaderName returns name canonicalised, or a config error naming
// field when a token cannot travel in it: not a valid field name, or a
// hop-by-hop, framing or X-Forwarded-* field. entra_token's header (where
// the token goes) and on_behalf_of's header (where a user's token comes
// in) are checked alike.
func CheckHeaderName(field, name string) (string, error) {
	if !httpguts.ValidHeaderFieldName(name) {
		return "", ConfigError(field, fmt.Sprintf("%q is not a valid header name", name))
	}
	canonical := http.CanonicalHeaderKey(name)
	if kind, ok := forbiddenHeaders[textproto.CanonicalMIMEHeaderKey(name)]; ok {
		return "", ConfigError(field, fmt.Sprintf("%q cannot carry the token: it is a %s field that "+
			"the proxy strips or rewrites", name, kind))
	}
	return canonical, nil
}
