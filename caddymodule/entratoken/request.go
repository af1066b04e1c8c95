package entratoken

import (
	"io"
	"maps"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// This file keeps the injected token where it belongs: on the one request
// handed to the next handler, never on the request the rest of the server
// reads, and never removable by the client.

// rejection is a request entra_token answers itself, before a token is
// looked up: not through handle_errors, which could send it elsewhere.
type rejection struct {
	status  int
	message string
}

var (
	traceConnectRefusal = &rejection{status: http.StatusMethodNotAllowed,
		message: "TRACE and CONNECT are never sent with a token"}
	dotSegmentRefusal = &rejection{status: http.StatusBadRequest,
		message: "the path has a dot-segment (. or .., plain or encoded), which routes and upstreams may resolve differently"}
)

// writeRejection answers a rejected request with its status and a plain-text
// reason.
func writeRejection(w http.ResponseWriter, rejection *rejection) error {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	http.Error(w, "entra_token: "+rejection.message, rejection.status)
	return nil
}

// checkRequest refuses what must never leave with a token: TRACE (an
// upstream or middlebox may echo the request, token included) and CONNECT,
// and a path with a dot-segment (see hasDotSegment).
func checkRequest(r *http.Request) *rejection {
	if r.Method == http.MethodTrace || r.Method == http.MethodConnect {
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

// hasDotSegment reports whether an escaped path has a dot-segment: a
// segment that is "." or ".." once decoded, where a segment ends at "/",
// an encoded "/" (%2f), "\\" (or %5c) and ";" (which Tomcat and Jetty
// strip: "..;" is ".." to them). A path that does not decode is one too.
// Caddy's matchers resolve dot-segments, so such a path could pick this
// route (and its token) while an upstream resolves the raw path to another.
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

// withToken returns the request to hand the next handler: a shallow copy of
// r with a header map of its own, in which every client copy of header
// (any case) is replaced by value and no Connection option names header
// (reverse_proxy would strip it), and with header and Proxy-Authorization
// kept out of its trailers. r itself, which placeholders, deferred header
// operations and error routes read, keeps what the client sent.
func withToken(r *http.Request, header, value string) *http.Request {
	proxied := r.WithContext(r.Context())
	// A deep copy: handlers such as request_header edit values in place.
	proxied.Header = r.Header.Clone()
	if proxied.Header == nil {
		proxied.Header = make(http.Header, 1)
	}
	maps.DeleteFunc(proxied.Header, func(name string, _ []string) bool { return strings.EqualFold(name, header) })
	proxied.Header[header] = []string{value}
	if connection, ok := proxied.Header["Connection"]; ok {
		proxied.Header["Connection"] = withoutConnectionOption(connection, header)
	}
	if r.Trailer != nil {
		proxied.Trailer = withoutCredentials(r.Trailer, header)
	}
	if mayHaveTrailers(r) {
		proxied.Body = &trailerFilter{ReadCloser: r.Body, source: r, dest: proxied, header: header}
	}
	return proxied
}

// carriesToken reports whether the request handed on still carried the
// token when the response came: a later handler may have removed it, and
// then a refusal says nothing about the token.
func carriesToken(proxied *http.Request, header, value string) bool {
	values := proxied.Header[header]
	if len(values) != 1 || values[0] != value {
		return false
	}
	for _, option := range proxied.Header["Connection"] {
		for token := range strings.SplitSeq(option, ",") {
			if strings.EqualFold(textproto.TrimString(token), header) {
				return false
			}
		}
	}
	return true
}

// withoutConnectionOption returns the Connection values with every option
// naming header removed.
func withoutConnectionOption(values []string, header string) []string {
	kept := make([]string, 0, len(values))
	for _, value := range values {
		var options []string
		changed := false
		for token := range strings.SplitSeq(value, ",") {
			if strings.EqualFold(textproto.TrimString(token), header) {
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

// withoutCredentials copies trailers without header and Proxy-Authorization
// (any case).
func withoutCredentials(trailers http.Header, header string) http.Header {
	kept := maps.Clone(trailers)
	maps.DeleteFunc(kept, func(name string, _ []string) bool {
		return strings.EqualFold(name, header) || strings.EqualFold(name, "Proxy-Authorization")
	})
	return kept
}

// mayHaveTrailers reports whether r's body can end with trailers: a chunked
// HTTP/1.1 body, or any body over HTTP/2 and HTTP/3.
func mayHaveTrailers(r *http.Request) bool {
	if r.Body == nil || r.Body == http.NoBody {
		return false
	}
	return r.ProtoMajor >= 2 || r.ContentLength < 0
}

// trailerFilter passes a body through and, when it ends, copies the trailers
// net/http read into the source request (announced or not) to the request
// handed on, without the token's header and Proxy-Authorization. It sits
// below reverse_proxy's own body wrapper, which copies them from there.
type trailerFilter struct {
	io.ReadCloser
	source, dest *http.Request
	header       string
	done         bool
}

func (f *trailerFilter) Read(p []byte) (int, error) {
	n, err := f.ReadCloser.Read(p)
	if err == io.EOF && !f.done {
		f.done = true
		if f.source.Trailer != nil {
			f.dest.Trailer = withoutCredentials(f.source.Trailer, f.header)
		}
	}
	return n, err
}
