package entraapp

import (
	"fmt"
	"net/http"

	"golang.org/x/net/http/httpguts"
)

// forbiddenHeaders cannot carry a token: net/http or reverse_proxy strip,
// rewrite or interpret them.
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
// field when a token cannot travel in it.
func CheckHeaderName(field, name string) (string, error) {
	if !httpguts.ValidHeaderFieldName(name) {
		return "", ConfigError(field, fmt.Sprintf("%q is not a valid header name", name))
	}
	canonical := http.CanonicalHeaderKey(name)
	if kind, ok := forbiddenHeaders[canonical]; ok {
		return "", ConfigError(field, fmt.Sprintf("%q cannot carry the token: it is a %s field that "+
			"the proxy strips or rewrites", name, kind))
	}
	return canonical, nil
}
