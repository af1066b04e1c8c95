package redisstore

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// testTLS returns a server configuration with a self-signed certificate
// for 127.0.0.1 and a client configuration that trusts it.
func testTLS(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "redis.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12},
		&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
}

// A healthy Redis over TLS whose event loop stalls (a fork, another
// client's slow command) while the store holds no connection (each
// timeout closes one) is not taken for a blackholed one: its TCP
// connections are made, only the handshakes wait, so calls made at once
// wait for it and succeed, and the store is not marked down. go-redis
// does the handshake inside the dial; the store used to see the dial only
// once the handshake was done, counted each attempt as one that waited
// for a dial, and failed the calls within a second.
func TestARedisOverTLSThatStallsIsNotTakenForBlackholed(t *testing.T) {
	const calls, opTimeout, stall = 4, 50 * time.Millisecond, time.Second
	serverTLS, clientTLS := testTLS(t)
	for _, tc := range []struct {
		name string
		opts func(addr string) Options
	}{
		{"url", func(addr string) Options { return Options{URL: "rediss://" + addr, TLSConfig: clientTLS} }},
		{"addrs", func(addr string) Options { return Options{Addrs: []string{addr}, TLSConfig: clientTLS} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stallOver := make(chan struct{})
			var stalled atomic.Int64
			server := serverTLS.Clone()
			server.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
				select {
				case <-stallOver:
				default:
					stalled.Add(1)
					<-stallOver // Redis's event loop is busy: the handshake waits
				}
				return nil, nil
			}
			mr := miniredis.NewMiniRedis()
			if err := mr.StartTLS(server); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(mr.Close)
			mr.Set("k", `{"id":"k","accessToken":"t"}`)
			opts := tc.opts(mr.Addr())
			opts.OpTimeout = opTimeout
			store, err := New(opts)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = store.Close() })

			time.AfterFunc(stall, func() { close(stallOver) })
			var wg sync.WaitGroup
			for range calls {
				wg.Go(func() {
					if rec, err := store.Get(t.Context(), "k"); err != nil || rec.AccessToken != "t" {
						t.Errorf("Get from a Redis over TLS stalled for %v: %v", stall, err)
					}
				})
			}
			wg.Wait()
			if stalled.Load() == 0 {
				t.Fatal("no handshake stalled: the test proves nothing")
			}
			if store.answers.down.Load() {
				t.Error("the store is marked down after a stall of a healthy Redis")
			}
		})
	}
}
