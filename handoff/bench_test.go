package handoff

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// BenchmarkKeepAliveRequest is one POST and its response on a keep-alive
// connection over loopback, served through a plain listener and through a
// View with its ServerHooks, to measure what following the exchange
// costs.
func BenchmarkKeepAliveRequest(b *testing.B) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	})
	listeners := map[string]func() (net.Listener, error){
		"plain": func() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") },
		"view": func() (net.Listener, error) {
			return Listen(context.Background(), "tcp", "127.0.0.1:0", net.ListenConfig{})
		},
	}
	for _, name := range []string{"plain", "view"} {
		b.Run(name, func(b *testing.B) {
			ln, err := listeners[name]()
			if err != nil {
				b.Fatal(err)
			}
			srv := &http.Server{Handler: handler}
			if name == "view" {
				hooks := NewServerHooks()
				srv.ConnState = hooks.ConnState
				srv.RegisterOnShutdown(hooks.ShutdownBegun)
			}
			go srv.Serve(ln)
			defer srv.Close()
			client := &http.Client{Transport: &http.Transport{}}
			url := "http://" + ln.Addr().String() + "/"
			b.ReportAllocs()
			for b.Loop() {
				resp, err := client.Post(url, "text/plain", strings.NewReader("payload"))
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
}
