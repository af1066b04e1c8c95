package entra_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"golang.org/x/net/http2"

	"github.com/caddy-entra/caddy-entra/entra"
)

// TestMutualTLSIdentitiesSharingAnXNetHTTP2TransportPresentTheirOwn: two
// identities given one caller transport configured by x/net's HTTP/2 each
// present their own certificate (its clones shared one HTTP/2 pool).
func TestMutualTLSIdentitiesSharingAnXNetHTTP2TransportPresentTheirOwn(t *testing.T) {
	dir := t.TempDir()
	caKey := rsaKey(t, 0)
	ca := newCert(t, caKey, "test CA", true, nil, nil)
	a := newCert(t, rsaKey(t, 1), "a", false, ca, caKey)
	b := newCert(t, rsaKey(t, 2), "b", false, ca, caKey)
	aCert, aKey := writeFile(t, dir, "a.crt", certPEM(a)), writeFile(t, dir, "a.key", pkcs1PEM(rsaKey(t, 1)))
	bCert, bKey := writeFile(t, dir, "b.crt", certPEM(b)), writeFile(t, dir, "b.key", pkcs1PEM(rsaKey(t, 2)))
	var mu sync.Mutex
	var presented []*x509.Certificate
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		presented = append(presented, r.TLS.PeerCertificates[0])
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "opaque-token", "token_type": "Bearer", "expires_in": 3600})
	}))
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	srv.StartTLS()
	defer srv.Close()
	base := &http.Transport{TLSClientConfig: srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()}
	if _, err := http2.ConfigureTransports(base); err != nil {
		t.Fatal(err)
	}
	for _, f := range [][2]string{{aCert, aKey}, {bCert, bKey}} {
		client, err := entra.NewClient(entra.Config{
			ClientID: "x", TokenEndpoint: srv.URL + "/token", ClientAuth: entra.ClientAuthTLS,
			ClientCertificate: &entra.CertificateCredential{CertFile: f[0], KeyFile: f[1]}, HTTPClient: &http.Client{Transport: base},
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := client.Token(context.Background(), []string{"orders:read"}); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if !presented[1].Equal(b) {
		t.Errorf("identity b's token request presented identity a's certificate")
	}
}
