package entra

import (
	"context"
	"crypto/tls"
	"net/http"
)

// tlsCredential presents the client certificate on the TLS connection to
// the token endpoint (RFC 8705 mutual TLS: tls_client_auth,
// self_signed_tls_client_auth); the form carries client_id only. When the
// files change, the identity's idle connections, which presented the
// previous certificate, are closed.
type tlsCredential struct {
	formCredential
	*certificateFiles[*tls.Certificate]
	transport *http.Transport // the identity's own, which presents the certificate
	client    *http.Client    // sends through transport
}

// newTLSCredential loads the certificate and makes the identity's own
// client from caller's (see mutualTLSBase).
func newTLSCredential(files CertificateCredential, form formCredential, caller *http.Client) (*tlsCredential, error) {
	base, checkRedirect, err := mutualTLSBase(caller)
	if err != nil {
		return nil, err
	}
	f, err := loadCertificateFiles(files, newTLSCertificate)
	if err != nil {
		return nil, err
	}
	c := &tlsCredential{formCredential: form, certificateFiles: f, transport: base.Clone()}
	f.onChange = c.transport.CloseIdleConnections // they presented the previous certificate
	c.client = &http.Client{Transport: c.transport, CheckRedirect: checkRedirect}
	if c.transport.TLSClientConfig == nil {
		c.transport.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	c.transport.TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return f.last(), nil
	}
	return c, nil
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
	c.reload() // rotated files: the idle connections are closed (onChange)
	req, err := c.post(ctx, tr, nil)
	return req, nil, err
}

func (*tlsCredential) kind() string { return "client_certificate" }

// mutualTLSBase returns the transport the identity's own client is cloned
// from (the caller's, else one like the shared one) and its redirect
// policy. A caller's transport must be an *http.Transport to present a
// certificate.
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
