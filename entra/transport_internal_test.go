package entra

import (
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
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

// The shared transport takes the proxy from the environment, but reaches
// the instance metadata service (a link-local address) directly: IMDS does
// not work through a proxy, which would also read its tokens. The proxy
// variables are read once per process, so the check runs in a process of
// its own that has them.
func TestSharedTransportReachesLinkLocalAddressesWithoutTheProxy(t *testing.T) {
	if os.Getenv("ENTRA_TEST_PROXY_CHILD") == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestSharedTransportReachesLinkLocalAddressesWithoutTheProxy$", "-test.v")
		cmd.Env = append(os.Environ(), "ENTRA_TEST_PROXY_CHILD=1", "HTTP_PROXY=http://proxy.test:3128", "http_proxy=", "NO_PROXY=", "no_proxy=")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS") {
			t.Fatalf("the check in a process with HTTP_PROXY: %v\n%s", err, out)
		}
		return
	}
	transport := newSharedTransport()
	for target, wantProxy := range map[string]bool{
		"http://169.254.169.254/metadata/identity/oauth2/token": false,
		"http://[fe80::1]/":          false,
		"http://login.example/token": true,
	} {
		proxy, err := transport.Proxy(httptest.NewRequest(http.MethodGet, target, nil))
		if err != nil || (proxy != nil) != wantProxy {
			t.Errorf("%s: proxy %v, %v; want a proxy: %v", target, proxy, err, wantProxy)
		}
	}
}
