package entra

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// The shared transport speaks HTTP/2 to an authority that offers it over
// TLS, and keeps idle connections longer than an hour-long token's refresh
// interval, without following redirects.
func TestSharedTransportSpeaksHTTP2AndKeepsConnections(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", "https://elsewhere.example/")
		w.WriteHeader(http.StatusTemporaryRedirect)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)

	transport := newSharedTransport()
	if transport.IdleConnTimeout < 90*time.Minute || transport.MaxIdleConnsPerHost != MaxIdleConnsPerAuthority {
		t.Errorf("IdleConnTimeout, MaxIdleConnsPerHost = %s, %d; want >= 90m, %d", transport.IdleConnTimeout, transport.MaxIdleConnsPerHost, MaxIdleConnsPerAuthority)
	}
	transport.TLSClientConfig = srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	client := *sharedHTTPClient()
	client.Transport = transport
	resp, err := client.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Errorf("protocol = %s, want HTTP/2", resp.Proto)
	}
	if resp.StatusCode != http.StatusTemporaryRedirect {
		t.Errorf("status = %d, want the 307 itself (redirects not followed)", resp.StatusCode)
	}
}
