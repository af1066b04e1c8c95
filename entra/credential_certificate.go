package entra

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/uuid"
	"go.step.sm/crypto/pemutil"
	"go.uber.org/zap"
	"software.sslmate.com/src/go-pkcs12"
)

// AssertionLifetime is the validity of the client assertions signed with a
// certificate (Entra accepts at most 10 minutes).
const AssertionLifetime = 5 * time.Minute

// errAssertionSigning marks a failure to sign a client assertion: not a
// network error.
var errAssertionSigning = errors.New("signing client assertion")

// minRSAKeyBits is the smallest key Entra ID accepts.
const minRSAKeyBits = 2048

// CertificateCredential authenticates with a certificate registered on the
// app registration: every token request carries a fresh client assertion,
// signed PS256. The files are read again for every request, so a rotated
// certificate needs no restart; files that do not load (half-written, or
// never loadable: another password, a key that is not RSA of 2048 bits or
// more, a certificate and key that do not match) leave the last good
// certificate in use, and new content that does not load is logged to
// Config.Logger as a warning, once per content.
type CertificateCredential struct {
	// CertFile is the path of the certificate: PEM (the leaf, optionally its
	// chain and key) or PKCS#12. Required.
	CertFile string

	// KeyFile is the path of the PEM private key (PKCS#1 or PKCS#8,
	// possibly encrypted), RSA of 2048 bits or more. Default: in CertFile.
	KeyFile string

	// KeyPassword decrypts an encrypted private key or a PKCS#12 file.
	// Default none.
	KeyPassword string

	// SendX5C adds the certificate chain to the assertion's x5c header, for
	// subject name and issuer authentication (Caddyfile send_x5c). Default
	// false.
	SendX5C bool
}

// certificateFiles holds what was parsed from a certificate and key last
// loaded, loading the files again when their content changed.
type certificateFiles[T any] struct {
	files    CertificateCredential
	load     func(certData, keyData []byte, files CertificateCredential) (T, error)
	onChange func()      // called after every reload that took new content; may be nil
	logger   *zap.Logger // told of new content that does not load

	mu      sync.Mutex
	digest  [sha256.Size]byte // of the files' content that current came from
	current T                 // of the last good certificate and key
	refused [sha256.Size]byte // of the last new content that did not load, warned of once; zero for none
	// unreadable is set from a read that failed, warned of, to the next
	// that succeeds.
	unreadable bool
}

// loadCertificateFiles loads the files; failures are *ConfigError (field
// client_certificate). logger is told of rotated files that do not load.
func loadCertificateFiles[T any](files CertificateCredential,
	load func([]byte, []byte, CertificateCredential) (T, error), logger *zap.Logger) (*certificateFiles[T], error) {
	if strings.TrimSpace(files.CertFile) == "" {
		return nil, &ConfigError{Field: "client_certificate", Reason: "a certificate file is required"}
	}
	for _, path := range []string{files.CertFile, files.KeyFile} {
		if err := CheckFilePath("client_certificate", path); err != nil {
			return nil, err
		}
	}
	f := &certificateFiles[T]{files: files, load: load, logger: logger}
	certData, keyData, err := readCertificateFiles(files)
	if err == nil {
		f.current, err = load(certData, keyData, files)
	}
	if err != nil {
		return nil, &ConfigError{Field: "client_certificate", Reason: err.Error()}
	}
	f.digest = contentDigest(certData, keyData)
	return f, nil
}

// reload parses the files again when their content changed, calls
// onChange if it took the new content, and returns the last good value.
// Every path that reads the files goes through it, so none can take new
// content without onChange; onChange runs under f.mu, so a reload that
// finds the new content taken returns only after it (a request then sends
// through the new transport). onChange must not call f's methods.
//
// New content that does not load, or files that cannot be read, are tried
// again at the next reload (a file being written loads once complete) and
// warned of once: a complete file that never loads, or one deleted, would
// otherwise leave the old certificate signing, unseen, until Entra refuses
// it, far from the cause.
func (f *certificateFiles[T]) reload() T {
	f.mu.Lock()
	defer f.mu.Unlock()
	certData, keyData, err := readCertificateFiles(f.files)
	if err != nil {
		if !f.unreadable {
			f.unreadable = true
			// The cause names the file's role and FileErrorKind, not its path.
			f.logger.Warn("the client certificate's files cannot be read; the last good certificate stays in use "+
				"until they can (they are read again at each token request)", zap.String("field", "client_certificate"), zap.Error(err))
		}
		return f.current
	}
	if f.unreadable {
		f.unreadable = false
		f.logger.Info("the client certificate's files can be read again", zap.String("field", "client_certificate"))
	}
	digest := contentDigest(certData, keyData)
	if digest == f.digest {
		return f.current
	}
	v, err := f.load(certData, keyData, f.files)
	if err != nil {
		if digest != f.refused {
			f.refused = digest
			// The cause is the parser's: it names no path, key or password.
			f.logger.Warn("the client certificate's files changed but do not load; the last good certificate stays in use "+
				"until they do (they are read again at each token request)", zap.String("field", "client_certificate"), zap.Error(err))
		}
		return f.current
	}
	if f.refused != ([sha256.Size]byte{}) {
		f.refused = [sha256.Size]byte{}
		f.logger.Info("the client certificate's files load again: the new certificate is in use", zap.String("field", "client_certificate"))
	}
	f.digest, f.current = digest, v
	if f.onChange != nil {
		f.onChange()
	}
	return f.current
}

// fingerprint is the digest of the content in use, after a reload.
func (f *certificateFiles[T]) fingerprint() string {
	f.reload()
	f.mu.Lock()
	defer f.mu.Unlock()
	return hex.EncodeToString(f.digest[:])
}

// last returns the last good value without reading the files.
func (f *certificateFiles[T]) last() T {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.current
}

// certificateCredential signs client assertions with the certificate's key.
type certificateCredential struct {
	formCredential
	*certificateFiles[jose.Signer]
}

// newCertificateCredential loads the certificate; logger is told of
// rotated files that do not load.
func newCertificateCredential(files CertificateCredential, form formCredential, logger *zap.Logger) (*certificateCredential, error) {
	f, err := loadCertificateFiles(files, newAssertionSigner, logger)
	if err != nil {
		return nil, err
	}
	return &certificateCredential{formCredential: form, certificateFiles: f}, nil
}

func (*certificateCredential) kind() string { return "client_certificate" }

// fingerprint: the certificate's, and with send_x5c that the assertion
// carries the chain, which subject name and issuer authentication needs.
func (c *certificateCredential) fingerprint() string {
	if c.files.SendX5C {
		return c.certificateFiles.fingerprint() + "\nsend_x5c"
	}
	return c.certificateFiles.fingerprint()
}

func (c *certificateCredential) newRequest(ctx context.Context, tr tokenRequest) (*http.Request, []string, error) {
	assertion, err := c.assertion(time.Now(), assertionAudience(tr.endpoint))
	if err != nil {
		return nil, nil, &RequestError{Err: err}
	}
	return c.postAssertion(ctx, tr, assertion)
}

// assertion returns a newly signed client assertion for audience.
func (c *certificateCredential) assertion(now time.Time, audience string) (string, error) {
	signer := c.reload()
	jti, err := uuid.NewRandom() // a version-4 UUID, as Entra's own libraries make the jti
	if err != nil {
		return "", fmt.Errorf("%w: %v", errAssertionSigning, err)
	}
	claims := josejwt.Claims{
		Issuer:    c.clientID,
		Subject:   c.clientID,
		Audience:  josejwt.Audience{audience},
		ID:        jti.String(),
		IssuedAt:  josejwt.NewNumericDate(now),
		NotBefore: josejwt.NewNumericDate(now),
		Expiry:    josejwt.NewNumericDate(now.Add(AssertionLifetime)),
	}
	assertion, err := josejwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		return "", fmt.Errorf("%w: %v", errAssertionSigning, err)
	}
	return assertion, nil
}

// readCertificateFiles reads the certificate file and the key file, if
// any. Errors name neither path (see FileErrorKind).
func readCertificateFiles(files CertificateCredential) (certData, keyData []byte, err error) {
	if certData, err = os.ReadFile(files.CertFile); err != nil {
		return nil, nil, fmt.Errorf("reading certificate: %s", FileErrorKind(err))
	}
	if files.KeyFile != "" {
		if keyData, err = os.ReadFile(files.KeyFile); err != nil {
			return nil, nil, fmt.Errorf("reading private key: %s", FileErrorKind(err))
		}
	}
	return certData, keyData, nil
}

// contentDigest identifies the content of both files.
func contentDigest(certData, keyData []byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(certData))))
	h.Write(certData)
	h.Write(keyData)
	return [sha256.Size]byte(h.Sum(nil))
}

// newAssertionSigner makes the PS256 signer whose header names the certificate.
func newAssertionSigner(certData, keyData []byte, files CertificateCredential) (jose.Signer, error) {
	chain, key, err := ParseCertificateCredential(certData, keyData, files.KeyPassword)
	if err != nil {
		return nil, err
	}
	thumbprint := sha256.Sum256(chain[0].Raw)
	opts := (&jose.SignerOptions{}).
		WithType("JWT").
		WithHeader("x5t#S256", base64.RawURLEncoding.EncodeToString(thumbprint[:]))
	if files.SendX5C {
		x5c := make([]string, len(chain))
		for i, cert := range chain {
			x5c[i] = base64.StdEncoding.EncodeToString(cert.Raw)
		}
		opts = opts.WithHeader("x5c", x5c)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.PS256, Key: key}, opts)
	if err != nil {
		return nil, fmt.Errorf("making assertion signer: %v", err)
	}
	return signer, nil
}

// ParseCertificateCredential parses certData, PEM or PKCS#12, and keyData,
// the PEM key if not nil: the chain with the key's certificate first, and
// the RSA key. Errors never quote the key or the password.
func ParseCertificateCredential(certData, keyData []byte, password string) ([]*x509.Certificate, *rsa.PrivateKey, error) {
	var (
		certs []*x509.Certificate
		key   *rsa.PrivateKey
	)
	if !bytes.Contains(certData, []byte("-----BEGIN")) {
		if keyData != nil {
			return nil, nil, errors.New("certificate file is not PEM; a PKCS#12 file holds its own key, so no key file may be set")
		}
		priv, leaf, caCerts, err := pkcs12.DecodeChain(certData, password)
		if err != nil {
			return nil, nil, fmt.Errorf("certificate file is neither PEM nor a readable PKCS#12 file: %v", err)
		}
		if key, err = rsaPrivateKey(priv); err != nil {
			return nil, nil, err
		}
		certs = append([]*x509.Certificate{leaf}, caCerts...)
	} else {
		var err error
		if certs, key, err = parsePEMCredential(certData, password, "certificate file"); err != nil {
			return nil, nil, err
		}
		if keyData != nil {
			keyCerts, keyFromFile, err := parsePEMCredential(keyData, password, "key file")
			switch {
			case err != nil:
				return nil, nil, err
			case len(keyCerts) > 0 && keyFromFile == nil:
				return nil, nil, errors.New("key file holds no private key")
			case key != nil && keyFromFile != nil:
				return nil, nil, errors.New("both the certificate file and the key file hold a private key")
			case keyFromFile != nil:
				key = keyFromFile
			}
		}
	}
	switch {
	case len(certs) == 0:
		return nil, nil, errors.New("no certificate found in the certificate file")
	case key == nil:
		return nil, nil, errors.New("no private key found (give a key file, or put the key in the certificate file)")
	case key.N.BitLen() < minRSAKeyBits:
		return nil, nil, fmt.Errorf("RSA key has %d bits; at least %d are required", key.N.BitLen(), minRSAKeyBits)
	}
	leaf := slices.IndexFunc(certs, func(cert *x509.Certificate) bool {
		pub, ok := cert.PublicKey.(*rsa.PublicKey)
		return ok && pub.Equal(&key.PublicKey)
	})
	if leaf < 0 {
		return nil, nil, errors.New("the certificate and the private key do not match")
	}
	return slices.Concat(certs[leaf:leaf+1], certs[:leaf], certs[leaf+1:]), key, nil
}

// parsePEMCredential reads the certificates and the (at most one) private
// key of a PEM file, ignoring other blocks.
func parsePEMCredential(data []byte, password, what string) ([]*x509.Certificate, *rsa.PrivateKey, error) {
	var (
		certs []*x509.Certificate
		key   *rsa.PrivateKey
	)
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch block.Type {
		case "CERTIFICATE":
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: parsing certificate: %v", what, err)
			}
			certs = append(certs, cert)
		case "RSA PRIVATE KEY", "PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY":
			if key != nil {
				return nil, nil, fmt.Errorf("%s holds more than one private key", what)
			}
			parsed, err := parsePrivateKeyBlock(block, password)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %v", what, err)
			}
			key = parsed
		}
	}
	return certs, key, nil
}

// parsePrivateKeyBlock decodes one PEM private key, decrypted with password.
func parsePrivateKeyBlock(block *pem.Block, password string) (*rsa.PrivateKey, error) {
	der := block.Bytes
	encrypted := block.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(block.Headers["Proc-Type"], "ENCRYPTED")
	if encrypted {
		if password == "" {
			return nil, errors.New("private key is encrypted; a key password is required")
		}
		var err error
		if der, err = pemutil.DecryptPEMBlock(block, []byte(password)); err != nil {
			return nil, errors.New("decrypting private key: wrong password or unsupported encryption")
		}
	}
	var key any
	var err error
	format := "PKCS#8 private key"
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(der)
		format = "PKCS#1 RSA private key"
	case "PRIVATE KEY", "ENCRYPTED PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(der)
	case "EC PRIVATE KEY":
		return nil, errors.New("private key is ECDSA; Entra ID certificate credentials need an RSA key")
	default:
		return nil, fmt.Errorf("%s is not supported; use a PEM RSA key (PKCS#1 or PKCS#8)", strings.ToLower(block.Type))
	}
	switch {
	case err != nil && encrypted:
		return nil, errors.New("decrypting private key: wrong password")
	case err != nil:
		return nil, errors.New("parsing " + format + " failed")
	}
	return rsaPrivateKey(key)
}

// rsaPrivateKey accepts RSA keys only, naming the type of any other.
func rsaPrivateKey(key any) (*rsa.PrivateKey, error) {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return k, nil
	case *ecdsa.PrivateKey:
		return nil, errors.New("private key is ECDSA; Entra ID certificate credentials need an RSA key")
	case ed25519.PrivateKey:
		return nil, errors.New("private key is Ed25519; Entra ID certificate credentials need an RSA key")
	default:
		return nil, fmt.Errorf("private key of type %T is not supported; Entra ID certificate credentials need an RSA key", key)
	}
}

// assertionAudience is the token endpoint without query or fragment.
func assertionAudience(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil {
		return endpoint
	}
	u.RawQuery, u.ForceQuery, u.Fragment = "", false, ""
	return u.String()
}
