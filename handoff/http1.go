package handoff

import (
	"bytes"
	"strconv"
)

// maxHead bounds the bytes kept of a response header block (16 KiB); a
// longer block counts as "Connection: close".
const maxHead = 16 << 10

// looksLikeRequest reports whether b is, or begins, an HTTP/1.x request
// line: a method token other than PRI (HTTP/2's preface), a space, a
// target, a space and "HTTP/1.<digit>". A b that ends early is judged on
// the bytes it has: "PRI" passes until its token ends (it may begin
// PRIVATE).
func looksLikeRequest(b []byte) bool {
	i := 0
	for i < len(b) && i < 32 && isTokenChar(b[i]) {
		i++
	}
	if i == len(b) {
		return i > 0 && i < 32
	}
	if i == 0 || b[i] != ' ' || string(b[:i]) == "PRI" {
		return false
	}
	i++
	start := i
	for i < len(b) && b[i] > ' ' && b[i] < 0x7f {
		i++
	}
	if i == len(b) {
		return true
	}
	if i == start || b[i] != ' ' {
		return false
	}
	version := b[i+1:]
	const want = "HTTP/1."
	if n := min(len(version), len(want)); string(version[:n]) != want[:n] {
		return false
	}
	if len(version) <= len(want) {
		return true
	}
	if c := version[len(want)]; c < '0' || c > '9' {
		return false
	}
	rest := version[len(want)+1:]
	return len(rest) == 0 || rest[0] == '\r' || rest[0] == '\n'
}

// isTokenChar reports whether c may appear in an HTTP token (RFC 9110 5.6.2).
func isTokenChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0
}

// headerEnd returns the length of the header block at the start of b,
// through the empty line that ends it, or -1 when it is not whole. Lines may
// end in CRLF or, as net/http accepts, a bare LF.
func headerEnd(b []byte) int {
	for i, c := range b {
		switch {
		case c != '\n':
		case i+1 < len(b) && b[i+1] == '\n':
			return i + 2
		case i+2 < len(b) && b[i+1] == '\r' && b[i+2] == '\n':
			return i + 3
		}
	}
	return -1
}

// requestLine returns the first line of b without its line ending.
func requestLine(b []byte) []byte {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	}
	return bytes.TrimSuffix(b, []byte("\r"))
}

func isHTTP11(line []byte) bool { return bytes.HasSuffix(line, []byte(" HTTP/1.1")) }

func isConnect(line []byte) bool { return bytes.HasPrefix(line, []byte("CONNECT ")) }

// headSwitching is what responseHead.feed returns for a 101 response.
const headSwitching = 101

// responseHead follows the response being written (its header block, past
// 1xx interim responses, then its body) to learn whether it is whole by its
// own framing and keeps the connection open.
type responseHead struct {
	buf             []byte
	done            bool // the final header block was read, or given up on
	connectionClose bool // the final response closes the connection (or is unknown)
	noBody          bool // a response to HEAD, or a 204 or 304
	chunked         bool
	contentLength   int64 // -1 when absent
	bodyWritten     int64
	tail            [5]byte // the last bytes written, for the chunked terminator
}

// reset starts following a new response; headRequest: it answers a HEAD.
func (h *responseHead) reset(headRequest bool) {
	*h = responseHead{buf: h.emptyBuf(), connectionClose: true, noBody: headRequest, contentLength: -1}
}

// emptyBuf returns buf emptied, nil when it grew large (it is not kept).
func (h *responseHead) emptyBuf() []byte {
	if cap(h.buf) > smallBuffer {
		return nil
	}
	return h.buf[:0]
}

// keepAlive reports whether the final response was written whole and keeps
// the connection open (not delimited by its close).
func (h *responseHead) keepAlive() bool {
	if !h.done || h.connectionClose {
		return false
	}
	switch {
	case h.noBody:
		return h.bodyWritten == 0
	case h.chunked:
		return string(h.tail[:]) == "0\r\n\r\n"
	}
	return h.contentLength >= 0 && h.bodyWritten == h.contentLength
}

// body counts p, written after the final header block.
func (h *responseHead) body(p []byte) {
	h.bodyWritten += int64(len(p))
	if len(p) >= len(h.tail) {
		copy(h.tail[:], p[len(p)-len(h.tail):])
		return
	}
	copy(h.tail[:], h.tail[len(p):])
	copy(h.tail[len(h.tail)-len(p):], p)
}

// feed reads p, the next bytes written: headSwitching when they complete a
// 101 response, else 0.
func (h *responseHead) feed(p []byte) int {
	if h.done {
		h.body(p)
		return 0
	}
	for !h.done && len(p) > 0 {
		room := maxHead - len(h.buf)
		if room <= 0 {
			h.done = true // too long to judge: treated as "Connection: close"
			return 0
		}
		take := min(room, len(p))
		before := len(h.buf)
		h.buf = append(h.buf, p[:take]...)
		end := headerEnd(h.buf)
		if end < 0 {
			p = p[take:]
			continue
		}
		block := h.buf[:end]
		status := statusCode(block)
		switch {
		case status == 101:
			h.done = true
			return headSwitching
		case status >= 100 && status < 200: // interim: the final one follows
			p = p[end-before:]
			h.buf = h.buf[:0]
		default:
			h.done = true
			h.connectionClose = status < 200 || headerHasToken(block, "Connection", "close")
			h.noBody = h.noBody || status == 204 || status == 304
			h.chunked = headerHasToken(block, "Transfer-Encoding", "chunked")
			h.contentLength = contentLength(block)
			h.buf = h.emptyBuf() // keep no response bytes once judged
			h.body(p[end-before:])
		}
	}
	return 0
}

// statusCode returns the status of a "HTTP/1.x NNN ..." header block, or 0.
func statusCode(block []byte) int {
	if len(block) < 12 || !bytes.HasPrefix(block, []byte("HTTP/1.")) || block[8] != ' ' {
		return 0
	}
	code := 0
	for _, c := range block[9:12] {
		if c < '0' || c > '9' {
			return 0
		}
		code = code*10 + int(c-'0')
	}
	return code
}

// headerValues calls yield with the value of each field name of a block.
func headerValues(block []byte, name string, yield func(value []byte)) {
	_, fields, _ := bytes.Cut(block, []byte("\n")) // past the status line
	for line := range bytes.Lines(fields) {
		field, value, ok := bytes.Cut(line, []byte(":")) // TrimSpace drops the line's end
		if ok && bytes.EqualFold(bytes.TrimSpace(field), []byte(name)) {
			yield(bytes.TrimSpace(value))
		}
	}
}

// headerHasToken reports whether a field name of a block lists token
// (comma-separated, case-insensitive).
func headerHasToken(block []byte, name, token string) bool {
	found := false
	headerValues(block, name, func(value []byte) {
		for item := range bytes.SplitSeq(value, []byte(",")) {
			found = found || bytes.EqualFold(bytes.TrimSpace(item), []byte(token))
		}
	})
	return found
}

// folded reports whether a header block folds a line (one that begins with
// a space or a tab), which net/http joins to the field before and the scans
// here do not: such a block is never judged by its fields.
func folded(block []byte) bool {
	_, fields, _ := bytes.Cut(block, []byte("\n"))
	for line := range bytes.Lines(fields) {
		if line[0] == ' ' || line[0] == '\t' {
			return true
		}
	}
	return false
}

// contentLength returns the Content-Length of a header block, -1 for none
// or unparsable.
func contentLength(block []byte) int64 {
	n := int64(-1)
	headerValues(block, "Content-Length", func(value []byte) {
		v, err := strconv.ParseInt(string(value), 10, 64)
		if err != nil || v < 0 {
			v = -1
		}
		n = v
	})
	return n
}
