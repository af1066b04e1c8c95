package entratest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"math/big"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Keys are slow to make: the tests share a few.
var (
	keysOnce sync.Once
	testKeys [3]*rsa.PrivateKey
)

func testKey(t *testing.T, i int) *rsa.PrivateKey {
	t.Helper()
	keysOnce.Do(func() {
		for n := range testKeys {
			key, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			testKeys[n] = key
		}
	})
	return testKeys[i]
}

// testCert makes a certificate for key, signed by parent/parentKey (self
// signed when parent is nil).
func testCert(t *testing.T, key *rsa.PrivateKey, cn string, isCA bool, parent *x509.Certificate, parentKey *rsa.PrivateKey) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  isCA,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// fakeClock is a settable clock for Options.Now.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// assertionSpec describes a client assertion a test signs with golang-jwt.
type assertionSpec struct {
	method     jwt.SigningMethod
	key        any
	x5tS256    *x509.Certificate // header x5t#S256 of this certificate
	x5t        *x509.Certificate // header x5t (SHA-1) of this certificate
	x5c        []*x509.Certificate
	iss, sub   string
	aud        string
	jti        string
	iat, nbf   *time.Time
	exp        *time.Time
	noDefaults bool
}

func signAssertion(t *testing.T, s assertionSpec) string {
	t.Helper()
	claims := jwt.MapClaims{"iss": s.iss, "sub": s.sub, "aud": s.aud}
	if s.jti != "" {
		claims["jti"] = s.jti
	}
	for name, at := range map[string]*time.Time{"iat": s.iat, "nbf": s.nbf, "exp": s.exp} {
		if at != nil {
			claims[name] = at.Unix()
		}
	}
	method := s.method
	if method == nil {
		method = jwt.SigningMethodPS256
	}
	token := jwt.NewWithClaims(method, claims)
	if s.x5tS256 != nil {
		token.Header["x5t#S256"] = thumbprintS256(s.x5tS256)
	}
	if s.x5t != nil {
		token.Header["x5t"] = thumbprintSHA1(s.x5t)
	}
	if s.x5c != nil {
		var chain []string
		for _, c := range s.x5c {
			chain = append(chain, stdBase64(c.Raw))
		}
		token.Header["x5c"] = chain
	}
	signed, err := token.SignedString(s.key)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

func assertionForm(assertion string) url.Values {
	return url.Values{
		"client_id":             {clientID},
		"client_assertion_type": {ClientAssertionType},
		"client_assertion":      {assertion},
		"scope":                 {graphScope},
		"grant_type":            {"client_credentials"},
	}
}

func TestClientAssertionValidation(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	e, srv := startEmulator(t, Options{Now: clock.Now})
	endpoint := srv.URL + e.TokenPath()
	key, otherKey := testKey(t, 0), testKey(t, 1)
	cert := testCert(t, key, "app", false, nil, nil)
	otherCert := testCert(t, otherKey, "other", false, nil, nil)
	e.AddCertificateClient(clientID, cert)

	now := clock.Now()
	at := func(d time.Duration) *time.Time { v := now.Add(d); return &v }
	valid := func() assertionSpec {
		return assertionSpec{key: key, x5tS256: cert, iss: clientID, sub: clientID, aud: endpoint,
			jti: newUUID(), iat: at(0), nbf: at(0), exp: at(5 * time.Minute)}
	}
	tests := []struct {
		name   string
		modify func(*assertionSpec)
		status int
		code   string
		aadsts int
	}{
		{"valid PS256", func(*assertionSpec) {}, 200, "", 0},
		{"valid RS256 with x5t", func(s *assertionSpec) { s.method = jwt.SigningMethodRS256; s.x5tS256 = nil; s.x5t = cert }, 200, "", 0},
		{"valid with 10 minute lifetime", func(s *assertionSpec) { s.exp = at(10 * time.Minute) }, 200, "", 0},
		{"wrong key, registered thumbprint", func(s *assertionSpec) { s.key = otherKey }, 401, "invalid_client", 700027},
		{"unregistered certificate", func(s *assertionSpec) { s.key = otherKey; s.x5tS256 = otherCert }, 401, "invalid_client", 700027},
		{"no thumbprint", func(s *assertionSpec) { s.x5tS256 = nil }, 401, "invalid_client", 700027},
		{"HS256", func(s *assertionSpec) { s.method = jwt.SigningMethodHS256; s.key = []byte("k") }, 401, "invalid_client", 700027},
		{"wrong aud", func(s *assertionSpec) {
			s.aud = "https://login.microsoftonline.com/" + DefaultTenantID + "/oauth2/v2.0/token"
		}, 401, "invalid_client", 700023},
		{"aud with another path", func(s *assertionSpec) { s.aud = srv.URL + "/common/oauth2/v2.0/token" }, 401, "invalid_client", 700023},
		{"wrong iss", func(s *assertionSpec) { s.iss = "99999999-0000-4000-8000-000000000000" }, 401, "invalid_client", 700021},
		{"wrong sub", func(s *assertionSpec) { s.sub = "someone" }, 401, "invalid_client", 700021},
		{"expired", func(s *assertionSpec) {
			s.iat, s.nbf, s.exp = at(-10*time.Minute), at(-10*time.Minute), at(-time.Second)
		}, 401, "invalid_client", 700024},
		{"no exp", func(s *assertionSpec) { s.exp = nil }, 401, "invalid_client", 700024},
		{"lifetime of an hour", func(s *assertionSpec) { s.exp = at(time.Hour) }, 401, "invalid_client", 700024},
		{"nbf far in the future", func(s *assertionSpec) { s.nbf, s.exp = at(10*time.Minute), at(12*time.Minute) }, 401, "invalid_client", 700024},
		{"no jti", func(s *assertionSpec) { s.jti = "" }, 401, "invalid_client", 50027},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := valid()
			tt.modify(&spec)
			r := post(t, endpoint, assertionForm(signAssertion(t, spec)))
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %v", r.status, tt.status, r.body)
			}
			if tt.status == 200 {
				claims, err := e.Verify(r.body["access_token"].(string))
				if err != nil || claims.AppID != clientID || claims.AppIDACR != "2" {
					t.Fatalf("Verify: %v, %+v", err, claims)
				}
				return
			}
			if r.body["error"] != tt.code {
				t.Errorf("error = %v, want %s", r.body["error"], tt.code)
			}
			checkEntraErrorBody(t, r, tt.aadsts)
		})
	}
	if e.AssertionsSeen() != int64(len(tests)) || e.AssertionsAccepted() != 3 {
		t.Errorf("AssertionsSeen, AssertionsAccepted = %d, %d; want %d, 3", e.AssertionsSeen(), e.AssertionsAccepted(), len(tests))
	}
}

func TestAnExpiredCertificateIsRefused(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	e, srv := startEmulator(t, Options{Now: clock.Now})
	endpoint := srv.URL + e.TokenPath()
	key := testKey(t, 0)
	cert := testCert(t, key, "app", false, nil, nil) // valid for the next 24 hours
	e.AddCertificateClient(clientID, cert)
	assertion := func() string {
		now := clock.Now()
		exp := now.Add(5 * time.Minute)
		return signAssertion(t, assertionSpec{key: key, x5tS256: cert, iss: clientID, sub: clientID, aud: endpoint,
			jti: newUUID(), iat: &now, nbf: &now, exp: &exp})
	}
	if r := post(t, endpoint, assertionForm(assertion())); r.status != 200 {
		t.Fatalf("while the certificate is valid: %d %v", r.status, r.body)
	}
	clock.Advance(25 * time.Hour)
	r := post(t, endpoint, assertionForm(assertion()))
	if r.status != 401 || r.body["error"] != "invalid_client" {
		t.Fatalf("after NotAfter: %d %v, want 401 invalid_client", r.status, r.body)
	}
	checkEntraErrorBody(t, r, 700027)
	if description, _ := r.body["error_description"].(string); !strings.Contains(description, "expired") {
		t.Errorf("error_description %q does not say the key expired", description)
	}
}

func TestClientAssertionReplay(t *testing.T) {
	e, srv := startEmulator(t, Options{})
	endpoint := srv.URL + e.TokenPath()
	key := testKey(t, 0)
	cert := testCert(t, key, "app", false, nil, nil)
	e.AddCertificateClient(clientID, cert)
	now := time.Now()
	exp := now.Add(5 * time.Minute)
	assertion := signAssertion(t, assertionSpec{key: key, x5tS256: cert, iss: clientID, sub: clientID, aud: endpoint, jti: newUUID(), nbf: &now, exp: &exp})

	if r := post(t, endpoint, assertionForm(assertion)); r.status != 200 {
		t.Fatalf("first use: %d %v", r.status, r.body)
	}
	r := post(t, endpoint, assertionForm(assertion))
	if r.status != 401 || r.body["error"] != "invalid_client" {
		t.Fatalf("replay: %d %v", r.status, r.body)
	}
	checkEntraErrorBody(t, r, 50013)
}

func TestClientAssertionForm(t *testing.T) {
	e, srv := startEmulator(t, Options{})
	endpoint := srv.URL + e.TokenPath()
	key := testKey(t, 0)
	cert := testCert(t, key, "app", false, nil, nil)
	e.AddCertificateClient(clientID, cert)
	now := time.Now()
	exp := now.Add(5 * time.Minute)
	sign := func() string {
		return signAssertion(t, assertionSpec{key: key, x5tS256: cert, iss: clientID, sub: clientID, aud: endpoint, jti: newUUID(), nbf: &now, exp: &exp})
	}

	withSecret := assertionForm(sign())
	withSecret.Set("client_secret", secret)
	wrongType := assertionForm(sign())
	wrongType.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:saml2-bearer")
	noType := assertionForm(sign())
	noType.Del("client_assertion_type")
	garbage := assertionForm("not.a.jwt")
	for name, tc := range map[string]struct {
		form   url.Values
		status int
		aadsts int
	}{
		"secret and assertion": {withSecret, 400, 90023},
		"wrong assertion type": {wrongType, 400, 90023},
		"no assertion type":    {noType, 400, 900144},
		"malformed assertion":  {garbage, 401, 50027},
	} {
		r := post(t, endpoint, tc.form)
		if r.status != tc.status {
			t.Errorf("%s: status %d, want %d: %v", name, r.status, tc.status, r.body)
			continue
		}
		checkEntraErrorBody(t, r, tc.aadsts)
	}

	// AddCertificateClient kept the secret the client had.
	if r := post(t, endpoint, validForm()); r.status != 200 {
		t.Errorf("secret after AddCertificateClient: %d %v", r.status, r.body)
	}
}

func TestCertificateRotationRegistration(t *testing.T) {
	e, srv := startEmulator(t, Options{})
	endpoint := srv.URL + e.TokenPath()
	oldKey, newKey := testKey(t, 0), testKey(t, 1)
	oldCert := testCert(t, oldKey, "old", false, nil, nil)
	newCert := testCert(t, newKey, "new", false, nil, nil)
	sign := func(key *rsa.PrivateKey, cert *x509.Certificate) string {
		now := time.Now()
		exp := now.Add(5 * time.Minute)
		return signAssertion(t, assertionSpec{key: key, x5tS256: cert, iss: clientID, sub: clientID, aud: endpoint, jti: newUUID(), nbf: &now, exp: &exp})
	}
	e.AddCertificateClient(clientID, oldCert)
	e.AddClientCertificate(clientID, newCert) // both registered during the rotation
	for _, a := range []string{sign(oldKey, oldCert), sign(newKey, newCert)} {
		if r := post(t, endpoint, assertionForm(a)); r.status != 200 {
			t.Fatalf("during rotation: %d %v", r.status, r.body)
		}
	}
	e.AddCertificateClient(clientID, newCert) // the old one removed
	if r := post(t, endpoint, assertionForm(sign(oldKey, oldCert))); r.status != 401 {
		t.Fatalf("old certificate after rotation: %d %v", r.status, r.body)
	}
	if r := post(t, endpoint, assertionForm(sign(newKey, newCert))); r.status != 200 {
		t.Fatalf("new certificate after rotation: %d %v", r.status, r.body)
	}
}

func TestSubjectNameIssuerAuthentication(t *testing.T) {
	e, srv := startEmulator(t, Options{})
	endpoint := srv.URL + e.TokenPath()
	caKey, leafKey, otherKey := testKey(t, 0), testKey(t, 1), testKey(t, 2)
	ca := testCert(t, caKey, "test CA", true, nil, nil)
	leaf := testCert(t, leafKey, "app.contoso.example", false, ca, caKey)
	wrongName := testCert(t, leafKey, "evil.example", false, ca, caKey)
	untrusted := testCert(t, leafKey, "app.contoso.example", false, nil, nil)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	e.AddSNIClient(clientID, roots, "app.contoso.example")

	now := time.Now()
	exp := now.Add(5 * time.Minute)
	for _, tc := range []struct {
		name   string
		key    *rsa.PrivateKey
		chain  []*x509.Certificate
		status int
	}{
		{"trusted chain", leafKey, []*x509.Certificate{leaf, ca}, 200},
		{"leaf only", leafKey, []*x509.Certificate{leaf}, 200},
		{"wrong subject", leafKey, []*x509.Certificate{wrongName, ca}, 401},
		{"untrusted issuer", leafKey, []*x509.Certificate{untrusted}, 401},
		{"key not the leaf's", otherKey, []*x509.Certificate{leaf, ca}, 401},
	} {
		a := signAssertion(t, assertionSpec{key: tc.key, x5tS256: tc.chain[0], x5c: tc.chain, iss: clientID, sub: clientID, aud: endpoint, jti: newUUID(), nbf: &now, exp: &exp})
		r := post(t, endpoint, assertionForm(a))
		if r.status != tc.status {
			t.Errorf("%s: status %d, want %d: %v", tc.name, r.status, tc.status, r.body)
		} else if tc.status != 200 {
			checkEntraErrorBody(t, r, 700027)
		}
	}
}

func TestFederatedCredential(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	e, srv := startEmulator(t, Options{Now: clock.Now})
	endpoint := srv.URL + e.TokenPath()
	const issuer, subject = "https://oidc.example/cluster", "system:serviceaccount:default:app"
	e.AddFederatedClient(clientID, issuer, subject)

	first, err := e.IssueFederatedToken(issuer, subject, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	r := post(t, endpoint, assertionForm(first))
	if r.status != 200 {
		t.Fatalf("federated token: %d %v", r.status, r.body)
	}
	if claims, err := e.Verify(r.body["access_token"].(string)); err != nil || claims.AppID != clientID {
		t.Fatalf("Verify: %v %+v", err, claims)
	}
	// Unlike a client assertion, the same federated token may be reused.
	if r := post(t, endpoint, assertionForm(first)); r.status != 200 {
		t.Fatalf("reused federated token: %d %v", r.status, r.body)
	}
	clock.Advance(30 * time.Minute)
	rotated, err := e.IssueFederatedToken(issuer, subject, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if r := post(t, endpoint, assertionForm(rotated)); r.status != 200 {
		t.Fatalf("rotated federated token: %d %v", r.status, r.body)
	}

	clock.Advance(45 * time.Minute) // first has expired, rotated not
	r = post(t, endpoint, assertionForm(first))
	if r.status != 400 || r.body["error"] != "invalid_client" {
		t.Fatalf("expired federated token: %d %v", r.status, r.body)
	}
	checkEntraErrorBody(t, r, 700024)

	otherSubject, _ := e.IssueFederatedToken(issuer, "system:serviceaccount:default:other", time.Hour)
	r = post(t, endpoint, assertionForm(otherSubject))
	if r.status != 400 || r.body["error"] != "invalid_request" {
		t.Fatalf("unregistered subject: %d %v", r.status, r.body)
	}
	checkEntraErrorBody(t, r, 70021)

	// Signed by a key that is not the issuer's.
	now := clock.Now()
	exp := now.Add(time.Hour)
	forged := signAssertion(t, assertionSpec{method: jwt.SigningMethodRS256, key: testKey(t, 0), iss: issuer, sub: subject, aud: FederatedAudience, nbf: &now, exp: &exp})
	r = post(t, endpoint, assertionForm(forged))
	if r.status != 401 {
		t.Fatalf("forged federated token: %d %v", r.status, r.body)
	}
	checkEntraErrorBody(t, r, 700027)

	if _, err := e.IssueFederatedToken(issuer, subject, 0); err == nil {
		t.Error("IssueFederatedToken accepted a zero lifetime")
	}
}

func stdBase64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
