package entra

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"net/http"
	"strings"
	"sync"
)

// tlsCredential authenticates with a client certificate presented on the
// TLS connection to the token endpoint (RFC 8705 mutual TLS client
// authentication: tls_client_auth for a certificate a CA issued,
// self_signed_tls_client_auth for one registered with the server): the
// form carries client_id and no credential. The files are read again for
// every token request and parsed again when their content changed; then
// the identity's idle connections, which presented the previous
// certificate, are closed, so the next request shakes hands with the new
// one. When changed files do not load, the last good certificate is kept
// and the files are tried again on the next request.
type tlsCredential struct {
	formCredential
	files CertificateCredential

	mu        sync.Mutex
	digest    [sha256.Size]byte // of the files' content that cert came from
	cert      *tls.Certificate  // the last good certificate and key
	transport *http.Transport   // the identity's own, which presents cert
}

// newTLSCredential loads the certificate and key (failures are
// *ConfigError, field client_certificate) and makes the identity's own
// transport from base (cloned): its connections present the certificate.
func newTLSCredential(files CertificateCredential, form formCredential, base *http.Transport) (*tlsCredential, error) {
	if strings.TrimSpace(files.CertFile) == "" {
		return nil, &ConfigError{Field: "client_certificate", Reason: "a certificate file is required"}
	}
	c := &tlsCredential{formCredential: form, files: files}
	certData, keyData, err := readCertificateFiles(files)
	if err == nil {
		c.cert, err = newTLSCertificate(certData, keyData, files)
	}
	if err != nil {
		return nil, &ConfigError{Field: "client_certificate", Reason: err.Error()}
	}
	c.digest = contentDigest(certData, keyData)
	c.transport = base.Clone()
	if c.transport.TLSClientConfig == nil {
		c.transport.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	c.transport.TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.cert, nil
	}
	return c, nil
}

// newTLSCertificate parses the certificate chain and key as the
// certificate credential does (PEM or PKCS#12, an RSA key).
func newTLSCertificate(certData, keyData []byte, files CertificateCredential) (*tls.Certificate, error) {
	chain, key, err := ParseCertificateCredential(certData, keyData, files.KeyPassword)
	if err != nil {
		return nil, err
	}
	cert := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return cert, nil
}

// refresh picks up rotated files; when the certificate changed it closes
// the idle connections that presented the previous one.
func (c *tlsCredential) refresh() {
	c.mu.Lock()
	changed := false
	if certData, keyData, err := readCertificateFiles(c.files); err == nil {
		if digest := contentDigest(certData, keyData); digest != c.digest {
			if cert, err := newTLSCertificate(certData, keyData, c.files); err == nil {
				c.digest, c.cert, changed = digest, cert, true
			}
		}
	}
	c.mu.Unlock()
	if changed {
		c.transport.CloseIdleConnections()
	}
}

func (c *tlsCredential) newRequest(ctx context.Context, tr tokenRequest) (*http.Request, []string, error) {
	c.refresh()
	req, err := c.post(ctx, tr, nil)
	return req, nil, err
}

func (*tlsCredential) kind() string { return "client_certificate" }

func (c *tlsCredential) fingerprint() string {
	c.refresh()
	c.mu.Lock()
	defer c.mu.Unlock()
	return hex.EncodeToString(c.digest[:])
}

// mutualTLSBase returns what the identity's own client is made from: a
// transport to clone (the caller's, or one with the shared transport's
// settings) and its redirect policy. A caller's client whose transport is
// not an *http.Transport cannot present a certificate.
func mutualTLSBase(caller *http.Client) (*http.Transport, func(*http.Request, []*http.Request) error, error) {
	if caller == nil {
		return newSharedTransport(), noRedirects, nil
	}
	base := caller.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	transport, ok := base.(*http.Transport)
	if !ok {
		return nil, nil, &ConfigError{Field: "client_auth", Reason: "mutual TLS needs an HTTP client whose Transport is an *http.Transport, to present the certificate"}
	}
	return transport, caller.CheckRedirect, nil
}
