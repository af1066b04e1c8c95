package entra

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
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
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"go.step.sm/crypto/pemutil"
	"software.sslmate.com/src/go-pkcs12"
)

// AssertionLifetime is the validity of the client assertions signed with a
// certificate (exp - iat). Entra accepts at most 10 minutes; a fresh
// assertion is signed for every token request anyway.
const AssertionLifetime = 5 * time.Minute

// errAssertionSigning marks a failure to sign a client assertion (no
// randomness, a signer error): not a network error.
var errAssertionSigning = errors.New("signing client assertion")

// minRSAKeyBits is the smallest key Entra ID accepts for a certificate
// credential.
const minRSAKeyBits = 2048

// CertificateCredential authenticates with a certificate registered on the
// app registration (Caddyfile client_certificate <cert> [<key>]).
//
// Every token request carries a fresh client_assertion: a JWT signed PS256
// with the private key, its header naming the certificate by x5t#S256 (and
// carrying the chain in x5c with SendX5C), its claims aud = the token
// endpoint the request goes to, iss = sub = client_id, a random jti, nbf = iat = now and exp =
// now + AssertionLifetime.
//
// The files are read again for every token request and parsed again when
// their content changed, so a rotated certificate is used without a restart.
// When changed files do not load (half-written during a rotation, a
// certificate that does not match the key yet), the last good certificate
// and key keep signing and the files are tried again on the next request:
// Entra then rejects the old certificate only if it was removed from the
// app registration, with an error that names it (AADSTS700027).
type CertificateCredential struct {
	// CertFile is the path of the certificate: PEM with the leaf certificate
	// and optionally its chain (any order; the leaf is the one that matches
	// the key) and optionally the private key. A file that is not PEM is
	// read as PKCS#12 (.pfx/.p12) holding the key, the certificate and the
	// chain, decrypted with KeyPassword. Required.
	CertFile string

	// KeyFile is the path of the PEM private key (PKCS#1 "RSA PRIVATE KEY",
	// PKCS#8 "PRIVATE KEY" or "ENCRYPTED PRIVATE KEY"). Only RSA keys of
	// 2048 bits or more are accepted, as Entra ID requires. Default: the key
	// is in CertFile.
	KeyFile string

	// KeyPassword decrypts an encrypted private key (PKCS#8 "ENCRYPTED
	// PRIVATE KEY" or a legacy OpenSSL encrypted PEM) or a PKCS#12 file.
	// Default none.
	KeyPassword string

	// SendX5C adds the certificate chain (leaf first) to the assertion's x5c
	// header, for subject name and issuer authentication (Caddyfile
	// send_x5c). Default false.
	SendX5C bool
}

// certificateCredential signs client assertions with the certificate's key,
// reloading the files when their content changes.
type certificateCredential struct {
	formCredential
	files CertificateCredential

	mu     sync.Mutex
	digest [sha256.Size]byte // of the files' content that current came from
	signer jose.Signer       // of the last good certificate and key
}

// newCertificateCredential loads the certificate and key; failures are
// *ConfigError (field client_certificate).
func newCertificateCredential(files CertificateCredential, form formCredential) (*certificateCredential, error) {
	if strings.TrimSpace(files.CertFile) == "" {
		return nil, &ConfigError{Field: "client_certificate", Reason: "a certificate file is required"}
	}
	c := &certificateCredential{formCredential: form, files: files}
	digest, signer, err := c.load()
	if err != nil {
		return nil, &ConfigError{Field: "client_certificate", Reason: err.Error()}
	}
	c.digest, c.signer = digest, signer
	return c, nil
}

func (*certificateCredential) kind() string { return "client_certificate" }

// fingerprint is the digest of the certificate and key content in use,
// after picking up rotated files (it reads them; it is not on a hot path).
func (c *certificateCredential) fingerprint() string {
	c.currentSigner()
	c.mu.Lock()
	defer c.mu.Unlock()
	return hex.EncodeToString(c.digest[:])
}

func (c *certificateCredential) newRequest(ctx context.Context, tr tokenRequest) (*http.Request, []string, error) {
	assertion, err := c.assertion(time.Now(), assertionAudience(tr.endpoint))
	if err != nil {
		return nil, nil, &RequestError{Err: err}
	}
	return c.postAssertion(ctx, tr, assertion)
}

// assertion returns a newly signed client assertion for audience, with the
// current content of the files when it loads, else the last good one.
func (c *certificateCredential) assertion(now time.Time, audience string) (string, error) {
	signer := c.currentSigner()
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", fmt.Errorf("%w: %v", errAssertionSigning, err)
	}
	claims := josejwt.Claims{
		Issuer:    c.clientID,
		Subject:   c.clientID,
		Audience:  josejwt.Audience{audience},
		ID:        formatUUID(jti),
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

// currentSigner reloads the files when their content changed and returns
// the signer of the last good certificate and key.
func (c *certificateCredential) currentSigner() jose.Signer {
	c.mu.Lock()
	defer c.mu.Unlock()
	certData, keyData, err := c.readFiles()
	if err != nil {
		return c.signer // unreadable (e.g. being replaced): keep the last good one
	}
	if digest := contentDigest(certData, keyData); digest != c.digest {
		if signer, err := newAssertionSigner(certData, keyData, c.files); err == nil {
			c.digest, c.signer = digest, signer
		}
		// On failure the digest is left unchanged, so the next request
		// tries again, and the last good signer keeps working.
	}
	return c.signer
}

// load reads and parses the files.
func (c *certificateCredential) load() ([sha256.Size]byte, jose.Signer, error) {
	certData, keyData, err := c.readFiles()
	if err != nil {
		return [sha256.Size]byte{}, nil, err
	}
	signer, err := newAssertionSigner(certData, keyData, c.files)
	if err != nil {
		return [sha256.Size]byte{}, nil, err
	}
	return contentDigest(certData, keyData), signer, nil
}

func (c *certificateCredential) readFiles() (certData, keyData []byte, err error) {
	return readCertificateFiles(c.files)
}

// readCertificateFiles reads the certificate file and, when named, the key
// file.
func readCertificateFiles(files CertificateCredential) (certData, keyData []byte, err error) {
	certData, err = os.ReadFile(files.CertFile)
	if err != nil {
		return nil, nil, fmt.Errorf("reading certificate: %w", err)
	}
	if files.KeyFile != "" {
		keyData, err = os.ReadFile(files.KeyFile)
		if err != nil {
			return nil, nil, fmt.Errorf("reading private key: %w", err)
		}
	}
	return certData, keyData, nil
}

// contentDigest identifies the content of both files.
func contentDigest(certData, keyData []byte) [sha256.Size]byte {
	h := sha256.New()
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(certData)))
	h.Write(n[:])
	h.Write(certData)
	h.Write(keyData)
	var sum [sha256.Size]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// newAssertionSigner parses the certificate chain and key and makes the
// PS256 signer whose header names the certificate.
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

// ParseCertificateCredential parses a certificate credential: certData is
// PEM (certificates, optionally the private key) or PKCS#12; keyData, when
// not nil, is the PEM private key. password decrypts an encrypted key or a
// PKCS#12 file. It returns the chain with the certificate that matches the
// key first, the others in file order, and the RSA key. Errors never quote
// the key or the password.
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
			if err != nil {
				return nil, nil, err
			}
			if len(keyCerts) > 0 && keyFromFile == nil {
				return nil, nil, errors.New("key file holds no private key")
			}
			if key != nil && keyFromFile != nil {
				return nil, nil, errors.New("both the certificate file and the key file hold a private key")
			}
			if keyFromFile != nil {
				key = keyFromFile
			}
		}
	}
	if len(certs) == 0 {
		return nil, nil, errors.New("no certificate found in the certificate file")
	}
	if key == nil {
		return nil, nil, errors.New("no private key found (give a key file, or put the key in the certificate file)")
	}
	if key.N.BitLen() < minRSAKeyBits {
		return nil, nil, fmt.Errorf("RSA key has %d bits; at least %d are required", key.N.BitLen(), minRSAKeyBits)
	}
	leaf := -1
	for i, cert := range certs {
		if pub, ok := cert.PublicKey.(*rsa.PublicKey); ok && pub.Equal(&key.PublicKey) {
			leaf = i
			break
		}
	}
	if leaf < 0 {
		return nil, nil, errors.New("the certificate and the private key do not match")
	}
	chain := make([]*x509.Certificate, 0, len(certs))
	chain = append(chain, certs[leaf])
	chain = append(chain, certs[:leaf]...)
	chain = append(chain, certs[leaf+1:]...)
	return chain, key, nil
}

// parsePEMCredential reads the certificates and the (at most one) private
// key of a PEM file. Other block types are ignored.
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

// parsePrivateKeyBlock decodes one PEM private key, decrypting it with
// password when it is encrypted.
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
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err := x509.ParsePKCS1PrivateKey(der)
		if err != nil {
			if encrypted {
				return nil, errors.New("decrypting private key: wrong password")
			}
			return nil, errors.New("parsing PKCS#1 RSA private key failed")
		}
		return key, nil
	case "PRIVATE KEY", "ENCRYPTED PRIVATE KEY":
		parsed, err := x509.ParsePKCS8PrivateKey(der)
		if err != nil {
			if encrypted {
				return nil, errors.New("decrypting private key: wrong password")
			}
			return nil, errors.New("parsing PKCS#8 private key failed")
		}
		return rsaPrivateKey(parsed)
	case "EC PRIVATE KEY":
		return nil, errors.New("private key is ECDSA; Entra ID certificate credentials need an RSA key")
	default:
		return nil, fmt.Errorf("%s is not supported; use a PEM RSA key (PKCS#1 or PKCS#8)", strings.ToLower(block.Type))
	}
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

// assertionAudience is the aud of client assertions: the token endpoint,
// without query or fragment.
func assertionAudience(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil {
		return endpoint
	}
	u.RawQuery, u.ForceQuery, u.Fragment = "", false, ""
	return u.String()
}

// formatUUID formats 16 random bytes as a version-4 UUID, the form Entra's
// own libraries give the jti.
func formatUUID(b []byte) string {
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
