package sdktest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// testPKI makes the certificates of the mutual TLS tests.
type testPKI struct {
	t      *testing.T
	dir    string
	ca     *x509.Certificate
	caKey  *rsa.PrivateKey
	CAFile string
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{t: t, dir: t.TempDir()}
	p.ca, p.caKey = p.issue("sdktest CA", nil, true, nil)
	p.CAFile = p.write("ca.pem", pemBlock("CERTIFICATE", p.ca.Raw))
	return p
}

// issue makes a certificate for cn: signed by the CA when parent is the
// CA, self-signed when parent is nil.
func (p *testPKI) issue(cn string, ips []net.IP, isCA bool, parent *x509.Certificate) (*x509.Certificate, *rsa.PrivateKey) {
	p.t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		p.t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn}, IPAddresses: ips,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	if isCA {
		tmpl.IsCA, tmpl.BasicConstraintsValid, tmpl.KeyUsage = true, true, x509.KeyUsageCertSign|x509.KeyUsageDigitalSignature
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent, p.caKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		p.t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, key
}

// files writes cert and key as name.crt and name.key (replacing them).
func (p *testPKI) files(name string, cert *x509.Certificate, key *rsa.PrivateKey) (certFile, keyFile string) {
	return p.write(name+".crt", pemBlock("CERTIFICATE", cert.Raw)), p.write(name+".key", pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key)))
}

func (p *testPKI) write(name string, content []byte) string {
	p.t.Helper()
	path := filepath.Join(p.dir, name)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, content, 0o600); err != nil {
		p.t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		p.t.Fatal(err)
	}
	return path
}

func pemBlock(kind string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der})
}

// fingerprint is a certificate's SHA-256 as Node.js prints it (AB:CD:...).
func fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

// selfSignedJWK is the client metadata key that registers a self-signed
// certificate with oidc-provider (self_signed_tls_client_auth).
func selfSignedJWK(cert *x509.Certificate) map[string]any {
	key := cert.PublicKey.(*rsa.PublicKey)
	sum := sha256.Sum256(cert.Raw)
	return map[string]any{
		"kty": "RSA", "use": "sig",
		"n":        base64.RawURLEncoding.EncodeToString(key.N.Bytes()),
		"e":        base64.RawURLEncoding.EncodeToString(big.NewInt(int64(key.E)).Bytes()),
		"x5c":      []string{base64.StdEncoding.EncodeToString(cert.Raw)},
		"x5t#S256": base64.RawURLEncoding.EncodeToString(sum[:]),
	}
}

// mtlsCaddyfile: %[1]d the site port, %[2]d the admin port.
const mtlsCaddyfile = `{
	admin 127.0.0.1:%[2]d
	entra {
		token_endpoint {env.TEST_TOKEN_ENDPOINT}
		client_id      sidecar-mtls-ca
		client_certificate {env.TEST_CA_ISSUED_CERT} {env.TEST_CA_ISSUED_KEY}
		client_auth    tls_client_auth
		token_request_param resource ` + oidcResource + `
		application ca-issued orders:read
		application self-signed orders:read {
			client_id sidecar-mtls-self
			client_certificate {env.TEST_SELF_SIGNED_CERT} {env.TEST_SELF_SIGNED_KEY}
			client_auth self_signed_tls_client_auth
			token_request_param resource ` + oidcResource + `
		}
	}
}

:%[1]d {
	bind 127.0.0.1
	handle_path /ca-issued/* {
		entra_token ca-issued
		reverse_proxy {$TEST_UPSTREAM}
	}
	handle_path /self-signed/* {
		entra_token self-signed
		reverse_proxy {$TEST_UPSTREAM}
	}
	respond 404
}
`

// The real sidecar against oidc-provider over TLS that asks for a client
// certificate (RFC 8705): tls_client_auth with a certificate the CA issued,
// self_signed_tls_client_auth with one registered with the provider. Each
// gets its token; the token request carries no secret. A certificate
// rotated on disk is presented on the next token request (the identity's
// requests go through a new transport; the old one's connections, which
// presented the old certificate, are not used again), without a restart.
func TestMutualTLSClientAuthAgainstOIDCProvider(t *testing.T) {
	node := requireNode(t)
	pki := newTestPKI(t)
	serverCert, serverKey := pki.issue("127.0.0.1", []net.IP{net.IPv4(127, 0, 0, 1)}, false, pki.ca)
	serverCertFile, serverKeyFile := pki.files("server", serverCert, serverKey)
	caIssued, caIssuedKey := pki.issue("sidecar-mtls-ca", nil, false, pki.ca)
	caIssuedCertFile, caIssuedKeyFile := pki.files("ca-issued", caIssued, caIssuedKey)
	selfSigned, selfSignedKey := pki.issue("sidecar-mtls-self", nil, false, nil)
	selfSignedCertFile, selfSignedKeyFile := pki.files("self-signed", selfSigned, selfSignedKey)

	clients, _ := json.Marshal([]map[string]any{
		{"client_id": "sidecar-mtls-ca", "token_endpoint_auth_method": "tls_client_auth", "tls_client_auth_subject_dn": "CN=sidecar-mtls-ca"},
		{"client_id": "sidecar-mtls-self", "token_endpoint_auth_method": "self_signed_tls_client_auth",
			"jwks": map[string]any{"keys": []any{selfSignedJWK(selfSigned)}}},
	})
	port := freePort(t)
	proc := startProcess(t, []string{"OIDC_CLIENTS=" + string(clients), "OIDC_TLS_CERT=" + serverCertFile,
		"OIDC_TLS_KEY=" + serverKeyFile, "OIDC_TLS_CA=" + pki.CAFile}, node,
		filepath.Join(jsDir, "oidcprovider.mjs"), fmt.Sprint(port), oidcResource)
	roots := x509.NewCertPool()
	roots.AddCert(pki.ca)
	provider := &oidcProvider{proc: proc, client: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}}
	waitFor(t, "oidc-provider over TLS", 30*time.Second, func() error {
		if proc.Exited() {
			t.Fatalf("oidc-provider exited:\n%s", proc.Output.String())
		}
		if i := strings.Index(proc.Output.String(), `{"issuer"`); i >= 0 {
			var started struct{ Issuer, Token_endpoint string }
			_ = json.Unmarshal([]byte(strings.SplitN(proc.Output.String()[i:], "\n", 2)[0]), &started)
			provider.issuer, provider.tokenEndpoint = started.Issuer, started.Token_endpoint
			return nil
		}
		return fmt.Errorf("not listening yet")
	})
	if !strings.HasPrefix(provider.tokenEndpoint, "https://") {
		t.Fatalf("token endpoint %q, want https", provider.tokenEndpoint)
	}

	var mu sync.Mutex
	var injected []string
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		injected = append(injected, r.Header.Get("Authorization"))
		mu.Unlock()
	}))
	t.Cleanup(upstream.Close)
	replica := startReplicaWith(t, mtlsCaddyfile, []string{
		"TEST_TOKEN_ENDPOINT=" + provider.tokenEndpoint, "TEST_UPSTREAM=" + upstream.URL,
		"SSL_CERT_FILE=" + pki.CAFile, // the provider's server certificate is the test CA's
		"TEST_CA_ISSUED_CERT=" + caIssuedCertFile, "TEST_CA_ISSUED_KEY=" + caIssuedKeyFile,
		"TEST_SELF_SIGNED_CERT=" + selfSignedCertFile, "TEST_SELF_SIGNED_KEY=" + selfSignedKeyFile,
	})
	tokenOf := func(application string) map[string]any {
		t.Helper()
		resp, err := http.Get(replica.URL + "/" + application + "/orders")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d, body %s\nsidecar logs:\n%s\noidc-provider:\n%s", application, resp.StatusCode, body,
				replica.proc.Output.String(), provider.proc.Output.String())
		}
		mu.Lock()
		token, _ := strings.CutPrefix(injected[len(injected)-1], "Bearer ")
		mu.Unlock()
		return provider.verify(t, token)
	}
	for application, want := range map[string]*x509.Certificate{"ca-issued": caIssued, "self-signed": selfSigned} {
		claims := tokenOf(application)
		clientID := "sidecar-mtls-" + strings.TrimSuffix(strings.TrimSuffix(application, "-issued"), "-signed")
		if claims["client_id"] != clientID || claims["aud"] != oidcResource {
			t.Errorf("%s: token claims client_id %v aud %v, want %s %s", application, claims["client_id"], claims["aud"], clientID, oidcResource)
		}
		if !strings.Contains(provider.proc.Output.String(), "token issued to "+clientID+" with certificate "+fingerprint(want)) {
			t.Errorf("%s: oidc-provider did not see the certificate on the token request:\n%s", application, provider.proc.Output.String())
		}
	}

	// Rotation: a new certificate from the CA in the same files; the next
	// token request (after a purge) presents it.
	rotated, rotatedKey := pki.issue("sidecar-mtls-ca", nil, false, pki.ca)
	pki.files("ca-issued", rotated, rotatedKey)
	req, _ := http.NewRequest(http.MethodDelete, replica.AdminURL+"/entra/tokens/ca-issued", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode/100 != 2 {
		t.Fatalf("purge: %v %v", resp, err)
	}
	tokenOf("ca-issued")
	if !strings.Contains(provider.proc.Output.String(), "token issued to sidecar-mtls-ca with certificate "+fingerprint(rotated)) {
		t.Errorf("after rotation the token request did not present the new certificate:\n%s", provider.proc.Output.String())
	}
	logs := replica.proc.Output.String()
	for _, secret := range []string{base64.StdEncoding.EncodeToString(x509.MarshalPKCS1PrivateKey(caIssuedKey))[:40],
		base64.StdEncoding.EncodeToString(x509.MarshalPKCS1PrivateKey(selfSignedKey))[:40]} {
		if strings.Contains(logs, secret) {
			t.Error("a private key appears in the sidecar logs")
		}
	}
}
