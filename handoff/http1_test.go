package handoff

import "testing"

func TestLooksLikeRequest(t *testing.T) {
	for in, want := range map[string]bool{
		"G":                            true,
		"GET":                          true,
		"POST /x HTTP/1.1\r\nHost: a":  true,
		"GET /x HTTP/1.0\r\n":          true,
		"GET /x HTT":                   true,
		"\x16\x03\x01\x02\x00":         false, // TLS ClientHello
		"PRI * HTTP/2.0\r\n\r\nSM\r\n": false, // HTTP/2 preface
		"GET /x HTTP/2.0\r\n":          false,
		" GET / HTTP/1.1":              false,
		"GET  / HTTP/1.1":              false,
		"GET / HTTP/1.1x":              false,
		"{\"json\": true}":             false,
		"P":                            true, // may begin POST: judged when its line is whole
		"PRI":                          true, // may begin PRIVATE
		"PRI ":                         false,
		"PRI * HTTP/":                  false, // the HTTP/2 preface, split
		"PRI * HTTP/1.1\r\n":           false, // never an HTTP/1 request
		"PRIVATE / HTTP/1.1\r\n":       true,
	} {
		if got := looksLikeRequest([]byte(in)); got != want {
			t.Errorf("looksLikeRequest(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestResponseHeadKnowsAWholeKeepAliveResponse(t *testing.T) {
	for _, tc := range []struct {
		name   string
		head   bool // answers a HEAD request
		writes []string
		want   bool
	}{
		{"content-length whole", false, []string{"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n", "ab", "cd"}, true},
		{"content-length short", false, []string{"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab"}, false},
		{"chunked whole", false, []string{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n", "0\r\n\r\n"}, true},
		{"chunked cut", false, []string{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n"}, false},
		{"connection close", false, []string{"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n"}, false},
		{"close-delimited", false, []string{"HTTP/1.1 200 OK\r\n\r\nbody"}, false},
		{"no content", false, []string{"HTTP/1.1 204 No Content\r\n\r\n"}, true},
		{"head", true, []string{"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"}, true},
		{"interim then final", false, []string{"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-", "Length: 1\r\n\r\nx"}, true},
		{"switching protocols", false, []string{"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"}, false},
		{"not HTTP", false, []string{"garbage\r\n\r\n"}, false},
	} {
		var h responseHead
		h.reset(tc.head)
		for _, w := range tc.writes {
			h.feed([]byte(w))
		}
		if got := h.keepAlive(); got != tc.want {
			t.Errorf("%s: keepAlive = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestHeaderEnd(t *testing.T) {
	for in, want := range map[string]int{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody": 27,
		"GET / HTTP/1.1\nHost: a\n\nbody":       24,
		"GET / HTTP/1.1\r\nHost: a\r\n":         -1,
	} {
		if got := headerEnd([]byte(in)); got != want {
			t.Errorf("headerEnd(%q) = %d, want %d", in, got, want)
		}
	}
}
