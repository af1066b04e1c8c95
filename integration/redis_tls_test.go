package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisTLSFiles writes a private CA and a server certificate for 127.0.0.1
// signed by it, and returns the CA, certificate and key file paths.
func redisTLSFiles(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	writePEM := func(name, blockType string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTemplate := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test redis CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	serverKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serverTemplate := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "redis.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"redis.test"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	serverDER, err := x509.CreateCertificate(rand.Reader, serverTemplate, ca, &serverKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(serverKey)
	if err != nil {
		t.Fatal(err)
	}
	return writePEM("ca.pem", "CERTIFICATE", caDER), writePEM("redis.pem", "CERTIFICATE", serverDER),
		writePEM("redis.key", "PRIVATE KEY", keyDER)
}

// tlsRedis is a real redis-server that only speaks TLS, with its
// certificate (for 127.0.0.1) from a private CA.
type tlsRedis struct {
	addr                      string
	caFile, certFile, keyFile string
	roots                     *x509.CertPool
	client                    *redis.Client
}

// tlsConfig is what a client of r (or of a Sentinel using r's files) needs.
func (r *tlsRedis) tlsConfig() *tls.Config {
	return &tls.Config{RootCAs: r.roots, MinVersion: tls.VersionTLS12}
}

// startTLSRedis starts a redis-server that only speaks TLS, and waits until
// it answers.
func startTLSRedis(t *testing.T) *tlsRedis {
	t.Helper()
	path := lookPathOrSkip(t, "redis-server")
	dir := t.TempDir()
	r := &tlsRedis{addr: fmt.Sprintf("127.0.0.1:%d", freePort(t)), roots: x509.NewCertPool()}
	r.caFile, r.certFile, r.keyFile = redisTLSFiles(t, dir)
	_, port, _ := net.SplitHostPort(r.addr)
	proc := startProcess(t, nil, path, "--port", "0", "--tls-port", port, "--bind", "127.0.0.1",
		"--tls-cert-file", r.certFile, "--tls-key-file", r.keyFile, "--tls-ca-cert-file", r.caFile,
		"--tls-auth-clients", "no", "--save", "", "--appendonly", "no", "--dir", dir)
	caPEM, _ := os.ReadFile(r.caFile)
	r.roots.AppendCertsFromPEM(caPEM)
	r.client = redis.NewClient(&redis.Options{Addr: r.addr, TLSConfig: r.tlsConfig()})
	t.Cleanup(func() { r.client.Close() })
	waitFor(t, "redis-server (TLS) on "+r.addr, 10*time.Second, func() error {
		if proc.Exited() {
			return fmt.Errorf("redis-server exited: %s", proc.Output.String())
		}
		return r.client.Ping(context.Background()).Err()
	})
	return r
}

// TestRedisOverTLSWithPrivateCA runs two replicas against a real
// redis-server that only speaks TLS, with a certificate from a private CA
// given as tls_ca.
func TestRedisOverTLSWithPrivateCA(t *testing.T) {
	r := startTLSRedis(t)
	r.assertReplicasShareOneToken(t, `redis rediss://{env.TEST_TLS_REDIS}/0 {
			tls_ca     {env.TEST_REDIS_CA}`, "TEST_TLS_REDIS="+r.addr)
}

// withRedis is the config of replicas sharing orders-api's token through
// the redis block that opens with redisOpening (the option and its first
// lines).
func withRedis(redisOpening string) string {
	return sidecarConfig(`
		authority_host {env.TEST_AUTHORITY_HOST}
		tenant_id      {env.TEST_TENANT_ID}
		client_id      {env.TEST_CLIENT_ID}
		client_secret  {env.TEST_CLIENT_SECRET}
		`+redisOpening+`
			key_prefix `+testKeyPrefix+`
			insecure_plaintext
		}
		application orders-api `+testScope,
		route{Path: "/orders", Application: "orders-api"})
}

// assertReplicasShareOneToken starts two replicas whose redis block opens
// with redisOpening ({env.TEST_REDIS_CA} is r's CA) and checks that they
// share one token, which r holds, with no store failure.
func (r *tlsRedis) assertReplicasShareOneToken(t *testing.T, redisOpening string, env ...string) {
	t.Helper()
	f := newFleet(t)
	first := assertTwoReplicasShareOneToken(t, f, withRedis(redisOpening),
		append(f.env(testClientSecret), append(env, "TEST_REDIS_CA="+r.caFile)...)...)
	keys, err := r.client.Keys(context.Background(), testKeyPrefix+"*:token").Result()
	if err != nil || len(keys) != 1 {
		t.Errorf("the TLS redis holds keys %v (%v), want one record", keys, err)
	}
	if logs := first.logs(); strings.Contains(logs, "token store unavailable") {
		t.Error("the replica could not use the TLS redis")
	}
}
