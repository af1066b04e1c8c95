package entra

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"slices"
	"sync/atomic"

	"go.uber.org/zap"
)

// tlsCredential presents the client certificate on the TLS connection to
// the token endpoint (RFC 8705 mutual TLS: tls_client_auth,
// self_signed_tls_client_auth); the form carries client_id only. When the
// files change, the identity's requests go through a new transport, and
// the previous one closes its connections, which presented the previous
// certificate, as they become idle: one busy at the rotation finishes its
// request and is not used again.
type tlsCredential struct {
	formCredential
	*certificateFiles[*tls.Certificate]
	base      *http.Transport                // what each of the identity's transports is cloned from
	transport atomic.Pointer[http.Transport] // the current one, which presents the current certificate
	client    *http.Client                   // sends through transport
}

// newTLSCredential loads the certificate and makes the identity's own
// client from caller's (see mutualTLSBase); logger is told of rotated
// files that do not load.
func newTLSCredential(files CertificateCredential, form formCredential, caller *http.Client, logger *zap.Logger) (*tlsCredential, error) {
	base, err := mutualTLSBase(caller)
	if err != nil {
		return nil, err
	}
	f, err := loadCertificateFiles(files, newTLSCertificate, logger)
	if err != nil {
		return nil, err
	}
	c := &tlsCredential{formCredential: form, certificateFiles: f, base: base}
	c.transport.Store(c.newTransport())
	f.onChange = c.rotate
	c.client = &http.Client{Transport: c, CheckRedirect: noRedirects}
	return c, nil
}

// newTransport clones the base into a transport that presents the
// certificate last loaded.
func (c *tlsCredential) newTransport() *http.Transport {
	t := c.base.Clone()
	if len(t.TLSNextProto) > 0 {
		// Another HTTP/2 (x/net's ConfigureTransports) keeps its connections
		// in the base's pool, shared by every clone: the certificate would
		// follow the connection, not the identity. HTTP/1.1 then.
		t.TLSNextProto = nil
		if t.TLSClientConfig != nil {
			t.TLSClientConfig.NextProtos = slices.DeleteFunc(slices.Clone(t.TLSClientConfig.NextProtos),
				func(proto string) bool { return proto == "h2" })
		}
	}
	if t.TLSClientConfig == nil {
		t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	t.TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return c.last(), nil
	}
	return t
}

// rotate puts a new transport in use and closes the previous one's idle
// connections. No request is sent through it after that, and a request
// busy on it at the rotation closes its idle connections again when done
// (see RoundTrip), so a connection that presented the old certificate
// closes as soon as its request is done, HTTP/1.1 or HTTP/2.
func (c *tlsCredential) rotate() {
	c.transport.Swap(c.newTransport()).CloseIdleConnections()
}

// RoundTrip sends req through the current transport: the identity's
// client sends through c. When the answer's body is closed (or the
// request failed) after a rotation retired that transport, its idle
// connections are closed.
func (c *tlsCredential) RoundTrip(req *http.Request) (*http.Response, error) {
	t := c.transport.Load()
	resp, err := t.RoundTrip(req)
	if err != nil {
		c.closeIfRetired(t)
		return resp, err
	}
	resp.Body = &retiringBody{ReadCloser: resp.Body, done: func() { c.closeIfRetired(t) }}
	return resp, nil
}

// closeIfRetired closes t's idle connections if a rotation retired it.
func (c *tlsCredential) closeIfRetired(t *http.Transport) {
	if c.transport.Load() != t {
		t.CloseIdleConnections()
	}
}

// retiringBody calls done once the body is closed.
type retiringBody struct {
	io.ReadCloser
	done func()
}

func (b *retiringBody) Close() error {
	err := b.ReadCloser.Close()
	b.done()
	return err
}

// CloseIdleConnections closes the current transport's idle connections
// (http.Client.CloseIdleConnections calls it).
func (c *tlsCredential) CloseIdleConnections() {
	c.transport.Load().CloseIdleConnections()
}

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

func (c *tlsCredential) newRequest(ctx context.Context, tr tokenRequest) (*http.Request, []string, error) {
	c.reload() // rotated files: a new transport (onChange)
	req, err := c.post(ctx, tr, nil)
	return req, nil, err
}

func (*tlsCredential) kind() string { return "client_certificate" }

// fingerprint: the certificate's, and that it is presented in mutual TLS,
// not signing an assertion (both methods send the same request).
func (c *tlsCredential) fingerprint() string {
	return c.certificateFiles.fingerprint() + "\n" + mutualTLSLine
}

// cacheKeyLines: the server may bind the tokens to the certificate (RFC
// 8705 cnf), which an assertion's tokens never are.
func (*tlsCredential) cacheKeyLines() []string { return []string{mutualTLSLine} }

// mutualTLSLine marks mutual TLS in CredentialFingerprint and CacheKey.
const mutualTLSLine = "client_auth=mutual_tls"

// mutualTLSBase returns the transport the identity's own client is cloned
// from: the caller's, else one like the shared one. A caller's transport
// must be an *http.Transport to present a certificate.
func mutualTLSBase(caller *http.Client) (*http.Transport, error) {
	if caller == nil {
		return newSharedTransport(), nil
	}
	base := caller.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	transport, ok := base.(*http.Transport)
	if !ok {
		return nil, &ConfigError{Field: "client_auth", Reason: "mutual TLS needs an HTTP client whose Transport is an *http.Transport, to present the certificate"}
	}
	return transport, nil
}
