package entra_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-entra/caddy-entra/entra"
)

// mtlsServer is a token endpoint over TLS that requires a client
// certificate of ca, and records what each token request presented.
type mtlsServer struct {
	*httptest.Server
	mu        sync.Mutex
	presented []*x509.Certificate // the leaf of each token request
	forms     []url.Values
	closed    chan struct{} // one per connection closed
}

func newMTLSServer(t *testing.T, ca *x509.Certificate) *mtlsServer {
	t.Helper()
	s := &mtlsServer{closed: make(chan struct{}, 16)}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		s.mu.Lock()
		s.presented = append(s.presented, r.TLS.PeerCertificates[0])
		s.forms = append(s.forms, r.PostForm)
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "opaque-token", "token_type": "Bearer", "expires_in": 3600})
	}))
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	s.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	s.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateClosed {
			s.closed <- struct{}{}
		}
	}
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

func (s *mtlsServer) last(t *testing.T) (*x509.Certificate, url.Values) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.presented) == 0 {
		t.Fatal("no token request reached the server")
	}
	return s.presented[len(s.presented)-1], s.forms[len(s.forms)-1]
}

// With client_auth tls_client_auth the certificate is presented in the TLS
// handshake and the form carries client_id and no credential; a
// certificate rotated on disk is presented by the next token request,
// although the previous connection was kept alive.
func TestMutualTLSClientAuthPresentsTheCurrentCertificate(t *testing.T) {
	dir := t.TempDir()
	caKey := rsaKey(t, 0)
	ca := newCert(t, caKey, "test CA", true, nil, nil)
	server := newMTLSServer(t, ca)
	first := newCert(t, rsaKey(t, 1), "orders-sidecar", false, ca, caKey)
	certFile := writeFile(t, dir, "client.crt", certPEM(first))
	keyFile := writeFile(t, dir, "client.key", pkcs1PEM(rsaKey(t, 1)))

	for _, clientAuth := range []string{entra.ClientAuthTLS, entra.ClientAuthSelfSignedTLS} {
		t.Run(clientAuth, func(t *testing.T) {
			client, err := entra.NewClient(entra.Config{
				ClientID: "orders-sidecar", TokenEndpoint: server.URL + "/token", ClientAuth: clientAuth,
				ClientCertificate: &entra.CertificateCredential{CertFile: certFile, KeyFile: keyFile},
				HTTPClient:        server.Client(), // trusts the server's certificate
			})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := client.Token(context.Background(), []string{"orders:read"}); err != nil {
				t.Fatal(err)
			}
			leaf, form := server.last(t)
			if !leaf.Equal(first) {
				t.Errorf("presented %q, want the configured certificate", leaf.Subject)
			}
			if form.Get("client_id") != "orders-sidecar" || form.Has("client_secret") || form.Has("client_assertion") {
				t.Errorf("form fields %v: want client_id and no credential", form)
			}
		})
	}

	// Rotation in place.
	client, err := entra.NewClient(entra.Config{
		ClientID: "orders-sidecar", TokenEndpoint: server.URL + "/token", ClientAuth: entra.ClientAuthTLS,
		ClientCertificate: &entra.CertificateCredential{CertFile: certFile, KeyFile: keyFile}, HTTPClient: server.Client(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Token(context.Background(), []string{"orders:read"}); err != nil {
		t.Fatal(err)
	}
	second := newCert(t, rsaKey(t, 2), "orders-sidecar", false, ca, caKey)
	writeFile(t, dir, "client.crt", certPEM(second))
	writeFile(t, dir, "client.key", pkcs1PEM(rsaKey(t, 2)))
	if _, err := client.Token(context.Background(), []string{"orders:read"}); err != nil {
		t.Fatal(err)
	}
	if leaf, _ := server.last(t); !leaf.Equal(second) {
		t.Errorf("after rotation the request presented %q serial %v, want the new certificate", leaf.Subject, leaf.SerialNumber)
	}
}

// A mutual TLS client's own transport keeps its connection alive until the
// client is done with (CloseIdleConnections, which the entra app calls when
// an old config is cleaned up): a reload leaves no connection behind.
func TestMutualTLSClientClosesItsIdleConnections(t *testing.T) {
	dir := t.TempDir()
	caKey := rsaKey(t, 0)
	ca := newCert(t, caKey, "test CA", true, nil, nil)
	server := newMTLSServer(t, ca)
	client, err := entra.NewClient(entra.Config{
		ClientID: "orders-sidecar", TokenEndpoint: server.URL + "/token", ClientAuth: entra.ClientAuthTLS,
		ClientCertificate: &entra.CertificateCredential{
			CertFile: writeFile(t, dir, "client.crt", certPEM(newCert(t, rsaKey(t, 1), "orders-sidecar", false, ca, caKey))),
			KeyFile:  writeFile(t, dir, "client.key", pkcs1PEM(rsaKey(t, 1))),
		},
		HTTPClient: server.Client(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Token(context.Background(), []string{"orders:read"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-server.closed:
		t.Fatal("the connection closed before CloseIdleConnections: nothing to test")
	default:
	}
	client.CloseIdleConnections()
	select {
	case <-server.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the idle connection was not closed")
	}
}

// Mutual TLS is refused at load for Entra's authorities (Entra does not
// offer it to applications), over plain http, and without a certificate.
func TestMutualTLSClientAuthConfig(t *testing.T) {
	dir := t.TempDir()
	key := rsaKey(t, 0)
	cert := &entra.CertificateCredential{CertFile: writeFile(t, dir, "c.pem", certPEM(newCert(t, key, "c", false, nil, nil))),
		KeyFile: writeFile(t, dir, "k.pem", pkcs1PEM(key))}
	for _, tt := range []struct {
		name   string
		cfg    entra.Config
		reason string
	}{
		{"Entra authority", entra.Config{TenantID: "contoso.onmicrosoft.com", ClientCertificate: cert}, "Entra ID does not offer"},
		{"Entra token endpoint", entra.Config{TokenEndpoint: "https://login.microsoftonline.com/" + claimsTenant + "/oauth2/v2.0/token", ClientCertificate: cert}, "Entra ID does not offer"},
		{"Entra host", entra.Config{TokenEndpoint: "https://login.microsoftonline.us/token", ClientCertificate: cert}, "Entra ID does not offer"},
		{"plain http", entra.Config{TokenEndpoint: "http://127.0.0.1:9000/token", ClientCertificate: cert}, "needs an https token_endpoint"},
		{"no certificate", entra.Config{TokenEndpoint: "https://idp.example/token", ClientSecret: "s"}, "needs client_certificate"},
		{"another server", entra.Config{TokenEndpoint: "https://idp.example/token", ClientCertificate: cert}, ""},
	} {
		for _, clientAuth := range []string{entra.ClientAuthTLS, entra.ClientAuthSelfSignedTLS} {
			t.Run(tt.name+"/"+clientAuth, func(t *testing.T) {
				tt.cfg.ClientID, tt.cfg.ClientAuth = "orders-sidecar", clientAuth
				_, err := entra.NewClient(tt.cfg)
				var cfgErr *entra.ConfigError
				switch {
				case tt.reason == "" && err != nil:
					t.Fatalf("NewClient: %v", err)
				case tt.reason == "":
				case !errors.As(err, &cfgErr) || cfgErr.Field != "client_auth" || !strings.Contains(cfgErr.Reason, tt.reason):
					t.Fatalf("error = %v; want client_auth: ...%s", err, tt.reason)
				}
			})
		}
	}
}

// Entra is recognised on every host of its token endpoints, aliases
// included, where the path does not have Entra's shape (here the v1
// endpoint with its api-version query): China's login.chinacloudapi.cn
// (azcore's cloud.AzureChina) beside login.partner.microsoftonline.cn, the
// global cloud's login.windows.net and login.microsoft.com, US
// Government's login.usgovcloudapi.net. Mutual TLS is refused on each.
func TestMutualTLSRefusedOnEveryEntraHost(t *testing.T) {
	dir := t.TempDir()
	key := rsaKey(t, 0)
	certPath := writeFile(t, dir, "c.pem", append(certPEM(newCert(t, key, "leaf", false, nil, nil)), pkcs1PEM(key)...))
	for _, host := range []string{"login.chinacloudapi.cn", "login.partner.microsoftonline.cn", "login.windows.net",
		"login.microsoft.com", "LOGIN.MICROSOFTONLINE.COM.", "login.usgovcloudapi.net", "login.microsoftonline.us"} {
		_, err := entra.NewClient(entra.Config{ClientID: "orders-sidecar", ClientAuth: entra.ClientAuthTLS,
			TokenEndpoint:     "https://" + host + "/contoso.example/oauth2/token?api-version=1.0",
			ClientCertificate: &entra.CertificateCredential{CertFile: certPath}})
		var cfgErr *entra.ConfigError
		if !errors.As(err, &cfgErr) || cfgErr.Field != "client_auth" || !strings.Contains(cfgErr.Reason, "Entra ID does not offer") {
			t.Errorf("%s: error = %v, want client_auth refused as Entra's", host, err)
		}
	}
	// A host that merely resembles one is another server's.
	if _, err := entra.NewClient(entra.Config{ClientID: "orders-sidecar", ClientAuth: entra.ClientAuthTLS,
		TokenEndpoint:     "https://login.microsoftonline.com.idp.example/oauth2/token",
		ClientCertificate: &entra.CertificateCredential{CertFile: certPath}}); err != nil {
		t.Errorf("another server: %v", err)
	}
}

// A connection busy with a token request when the certificate files rotate
// finishes its request, and is never used again: every later token request
// presents the new certificate, and the old connection is closed once it
// is done.
func TestMutualTLSRotationReachesAConnectionBusyAtIt(t *testing.T) {
	for _, http2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "HTTP/1.1", true: "HTTP/2"}[http2], func(t *testing.T) {
			mutualTLSRotationReachesAConnectionBusyAtIt(t, http2)
		})
	}
}

func mutualTLSRotationReachesAConnectionBusyAtIt(t *testing.T, http2 bool) {
	dir := t.TempDir()
	caKey := rsaKey(t, 0)
	ca := newCert(t, caKey, "test CA", true, nil, nil)
	first := newCert(t, rsaKey(t, 1), "orders-sidecar", false, ca, caKey)
	certFile := writeFile(t, dir, "client.crt", certPEM(first))
	keyFile := writeFile(t, dir, "client.key", pkcs1PEM(rsaKey(t, 1)))

	var mu sync.Mutex
	var presented []*x509.Certificate
	busy, release := make(chan struct{}), make(chan struct{})
	closed := make(chan struct{}, 16)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		presented = append(presented, r.TLS.PeerCertificates[0])
		n := len(presented)
		mu.Unlock()
		if n == 1 { // in flight during the rotation
			close(busy)
			<-release
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "opaque-token", "token_type": "Bearer", "expires_in": 3600})
	}))
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	srv.EnableHTTP2 = http2
	srv.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateClosed {
			closed <- struct{}{}
		}
	}
	srv.StartTLS()
	defer srv.Close()

	client, err := entra.NewClient(entra.Config{
		ClientID: "orders-sidecar", TokenEndpoint: srv.URL + "/token", ClientAuth: entra.ClientAuthTLS,
		ClientCertificate: &entra.CertificateCredential{CertFile: certFile, KeyFile: keyFile}, HTTPClient: srv.Client(),
	})
	if err != nil {
		t.Fatal(err)
	}
	inFlight := make(chan error)
	go func() { _, err := client.Token(context.Background(), []string{"orders:read"}); inFlight <- err }()
	<-busy
	second := newCert(t, rsaKey(t, 2), "orders-sidecar", false, ca, caKey)
	writeFile(t, dir, "client.crt", certPEM(second))
	writeFile(t, dir, "client.key", pkcs1PEM(rsaKey(t, 2)))
	if _, err := client.Token(context.Background(), []string{"orders:read"}); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-inFlight; err != nil {
		t.Fatalf("the token request in flight at the rotation: %v", err)
	}
	select {
	case <-closed: // the old connection, done with its request
	case <-time.After(5 * time.Second):
		t.Error("the connection that presented the old certificate was kept after its request")
	}
	for range 5 {
		if _, err := client.Token(context.Background(), []string{"orders:read"}); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for i, leaf := range presented[1:] {
		if !leaf.Equal(second) {
			t.Errorf("token request %d of %d after the rotation presented the old certificate", i+1, len(presented)-1)
		}
	}
}
