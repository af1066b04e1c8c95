package entratoken

import (
	"io"
	"maps"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// The injected token goes on the one request handed to the next handler,
// never on the one the rest of the server reads.

// rejection is a request answered before a token is looked up (not through
// handle_errors, which could send it elsewhere).
type rejection struct {
	status  int
	result  string // of requests_total
	message string
}

var (
	traceConnectRefusal = &rejection{status: http.StatusMethodNotAllowed, result: "method_refused",
		message: "TRACE and CONNECT are never sent with a token"}
	dotSegmentRefusal = &rejection{status: http.StatusBadRequest, result: "dot_segment",
		message: "the path has a dot-segment (. or .., plain or encoded), which routes and upstreams may resolve differently"}
)

// checkRequest refuses TRACE (which may echo the token) and CONNECT, and a
// path with a dot-segment.
func checkRequest(r *http.Request) *rejection {
	// Any case: Go forwards a method as sent, and some servers fold it.
	if strings.EqualFold(r.Method, http.MethodTrace) || strings.EqualFold(r.Method, http.MethodConnect) {
		return traceConnectRefusal
	}
	// What the client sent, before any rewrite (handle_path cleans what it
	// strips), and what will be forwarded.
	clientURI := r.RequestURI
	if original, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok {
		clientURI = original.RequestURI
	}
	clientPath, _, _ := strings.Cut(clientURI, "?")
	if hasDotSegment(clientPath) || hasDotSegment(r.URL.EscapedPath()) {
		return dotSegmentRefusal
	}
	return nil
}

// hasDotSegment reports whether an escaped path has a segment that is "."
// or ".." once decoded, segments ending at "/", "\\" and ";" (Tomcat's
// "..;"), or does not decode. Caddy's matchers resolve them, so such a path
// could pick this route's token while an upstream resolves it elsewhere.
func hasDotSegment(escapedPath string) bool {
	if !strings.Contains(escapedPath, "%") && !strings.Contains(escapedPath, "..") &&
		!strings.Contains(escapedPath, "/.") && !strings.Contains(escapedPath, "\\") {
		return false
	}
	decoded, err := url.PathUnescape(escapedPath)
	if err != nil {
		return true
	}
	for segment := range strings.FieldsFuncSeq(decoded, isSegmentEnd) {
		if segment == "." || segment == ".." {
			return true
		}
	}
	return false
}

// isSegmentEnd reports whether r ends a path segment for some server.
func isSegmentEnd(r rune) bool { return r == '/' || r == '\\' || r == ';' }

// withToken returns a copy of r for the next handler, whose every copy of
// header (any case) is value, named by no Connection option, without
// consumed (an on-behalf-of route's user token header), and whose trailers
// carry none of these, nor Proxy-Authorization. r keeps what the client sent.
func withToken(r *http.Request, header, value string, consumed ...string) *http.Request {
	proxied := r.WithContext(r.Context())
	// A deep copy: handlers such as request_header edit values in place.
	proxied.Header = r.Header.Clone()
	if proxied.Header == nil {
		proxied.Header = make(http.Header, 1)
	}
	maps.DeleteFunc(proxied.Header, func(name string, _ []string) bool { return sameHeader(name, header) || anyHeader(name, consumed) })
	proxied.Header[header] = []string{value}
	if connection, ok := proxied.Header["Connection"]; ok {
		proxied.Header["Connection"] = withoutConnectionOption(connection, header)
	}
	// A chunked HTTP/1.1 body, or any HTTP/2 or HTTP/3 body, may end with trailers.
	bodyTrailers := r.Body != nil && r.Body != http.NoBody && (r.ProtoMajor >= 2 || r.ContentLength < 0)
	if r.Trailer == nil && !bodyTrailers {
		return proxied
	}
	credentials := append([]string{header, "Proxy-Authorization"}, consumed...)
	if r.Trailer != nil {
		proxied.Trailer = withoutCredentials(r.Trailer, credentials)
	}
	if bodyTrailers {
		proxied.Body = &trailerFilter{ReadCloser: r.Body, source: r, dest: proxied, credentials: credentials}
	}
	return proxied
}

// anyHeader reports whether name is one of headers, as sameHeader compares.
func anyHeader(name string, headers []string) bool {
	return slices.ContainsFunc(headers, func(header string) bool { return sameHeader(name, header) })
}

// sameHeader reports whether name is header, in any case, or a copy of it
// with "_" or "." for "-", which CGI and FastCGI upstreams (PHP, Caddy's
// fastcgi transport) read as the same variable; Caddy drops such names
// unless expected_underscore_headers or expected_dot_headers lets them in.
func sameHeader(name, header string) bool {
	if len(name) != len(header) {
		return false
	}
	for i := range len(name) {
		if headerByte(name[i]) != headerByte(header[i]) {
			return false
		}
	}
	return true
}

// headerByte is c as sameHeader compares it: lower case, "-" for "_" and ".".
func headerByte(c byte) byte {
	switch {
	case c == '_' || c == '.':
		return '-'
	case 'A' <= c && c <= 'Z':
		return c + 'a' - 'A'
	}
	return c
}

// carriesToken reports whether the request handed on still carried the
// token: else a refusal says nothing about it.
func carriesToken(proxied *http.Request, header, value string) bool {
	values, connection := proxied.Header[header], proxied.Header["Connection"]
	return len(values) == 1 && values[0] == value &&
		slices.Equal(withoutConnectionOption(connection, header), connection)
}

func withoutConnectionOption(values []string, header string) []string {
	kept := make([]string, 0, len(values))
	for _, value := range values {
		var options []string
		changed := false
		for token := range strings.SplitSeq(value, ",") {
			if sameHeader(textproto.TrimString(token), header) {
				changed = true
				continue
			}
			options = append(options, token)
		}
		if !changed {
			kept = append(kept, value)
		} else if joined := strings.TrimSpace(strings.Join(options, ",")); joined != "" {
			kept = append(kept, joined)
		}
	}
	return kept
}

// withoutCredentials copies trailers without the credentials headers.
func withoutCredentials(trailers http.Header, credentials []string) http.Header {
	kept := maps.Clone(trailers)
	maps.DeleteFunc(kept, func(name string, _ []string) bool { return anyHeader(name, credentials) })
	return kept
}

// trailerFilter copies, when the body ends, the trailers net/http read
// into source to dest, without credentials (below reverse_proxy's wrapper,
// which copies them from dest).
type trailerFilter struct {
	io.ReadCloser
	source, dest *http.Request
	credentials  []string
	done         bool
}

func (f *trailerFilter) Read(p []byte) (int, error) {
	n, err := f.ReadCloser.Read(p)
	if err == io.EOF && !f.done {
		f.done = true
		if f.source.Trailer != nil {
			f.dest.Trailer = withoutCredentials(f.source.Trailer, f.credentials)
		}
	}
	return n, err
}
