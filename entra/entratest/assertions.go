package entratest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Client assertion rules, as Entra ID applies them.
const (
	// ClientAssertionType is the only client_assertion_type accepted.
	ClientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

	// FederatedAudience is the aud of tokens exchanged through a federated
	// identity credential.
	FederatedAudience = "api://AzureADTokenExchange"

	// MaxAssertionLifetime is the longest a client assertion may be valid
	// (exp - nbf, or exp - iat), beyond the clock skew allowance.
	MaxAssertionLifetime = 10 * time.Minute

	// AssertionClockSkew is how far in the future nbf (or iat) may be, and
	// how much longer than MaxAssertionLifetime an assertion may be valid.
	AssertionClockSkew = 5 * time.Minute
)

// sniRegistration is subject name and issuer authentication: any
// certificate whose chain (sent in x5c) verifies against roots and whose
// subject common name is subject.
type sniRegistration struct {
	roots   *x509.CertPool
	subject string
}

// federatedSubject is one federated identity credential of an app.
type federatedSubject struct {
	issuer  string
	subject string
}

// AddCertificateClient registers clientID with cert as its only certificate
// credential (replacing any it had; its secret and other credentials stay).
// The client then authenticates with a client assertion signed by cert's
// key, whose header names cert by x5t#S256 (or x5t), while cert is valid
// (from its NotBefore to its NotAfter, by the emulator's clock; otherwise
// AADSTS700027, "The key used is expired").
func (e *Emulator) AddCertificateClient(clientID string, cert *x509.Certificate) {
	e.updateClient(clientID, func(c *client) { c.certs = []*x509.Certificate{cert} })
}

// AddClientCertificate adds cert to the certificate credentials of
// clientID, as during a rotation, when the old and the new certificate are
// both registered.
func (e *Emulator) AddClientCertificate(clientID string, cert *x509.Certificate) {
	e.updateClient(clientID, func(c *client) { c.certs = append(slices.Clone(c.certs), cert) })
}

// AddSNIClient registers clientID for subject name and issuer
// authentication: an assertion whose x5c chain verifies against roots and
// whose leaf certificate's subject common name is subject is accepted,
// whatever the certificate. It replaces any earlier SNI registration.
func (e *Emulator) AddSNIClient(clientID string, roots *x509.CertPool, subject string) {
	e.updateClient(clientID, func(c *client) { c.sni = &sniRegistration{roots: roots, subject: subject} })
}

// AddFederatedClient adds a federated identity credential to clientID: a
// token issued (by IssueFederatedToken) for issuer and subject, with aud
// api://AzureADTokenExchange, is accepted as its client assertion.
func (e *Emulator) AddFederatedClient(clientID, issuer, subject string) {
	e.updateClient(clientID, func(c *client) {
		c.federated = append(slices.Clone(c.federated), federatedSubject{issuer: issuer, subject: subject})
	})
}

// federatedClaims are the claims of a federated (e.g. Kubernetes service
// account) token.
type federatedClaims struct {
	jwt.RegisteredClaims
}

// IssueFederatedToken returns a token as an external OIDC issuer (a
// Kubernetes cluster) would project it for a workload: RS256, signed with a
// key the emulator holds for all issuers, claims iss = issuer, sub =
// subject, aud = api://AzureADTokenExchange, iat = nbf = now (the emulator's
// clock) and exp = now + lifetime. Write it to the federated token file.
func (e *Emulator) IssueFederatedToken(issuer, subject string, lifetime time.Duration) (string, error) {
	if issuer == "" || subject == "" {
		return "", errors.New("entratest: federated token needs an issuer and a subject")
	}
	if lifetime <= 0 {
		return "", errors.New("entratest: federated token lifetime must be positive")
	}
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", err
	}
	now := e.now()
	token := jwt.NewWithClaims(jwt.SigningMethodRS256, federatedClaims{jwt.RegisteredClaims{
		Issuer:    issuer,
		Subject:   subject,
		Audience:  jwt.ClaimStrings{FederatedAudience},
		IssuedAt:  jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(lifetime)),
		ID:        uuidFromBytes(jti[:]),
	}})
	token.Header["kid"] = e.federationKid
	signed, err := token.SignedString(e.federationKey)
	if err != nil {
		return "", fmt.Errorf("entratest: signing federated token: %w", err)
	}
	return signed, nil
}

// checkAssertionForm checks the form fields around a client_assertion.
func (e *Emulator) checkAssertionForm(form formValues, secret string) *entraError {
	e.assertionsSeen.Add(1)
	if secret != "" {
		return &entraError{http.StatusBadRequest, "invalid_request", 90023,
			"Only one client credential may be presented: both 'client_secret' and 'client_assertion' were sent."}
	}
	switch assertionType := form.Get("client_assertion_type"); assertionType {
	case ClientAssertionType:
		return nil
	case "":
		m := missingParameter("client_assertion_type")
		return &m
	default:
		return &entraError{http.StatusBadRequest, "invalid_request", 90023,
			fmt.Sprintf("Unsupported client_assertion_type '%s'.", assertionType)}
	}
}

// validateAssertion checks a client assertion: a federated token when its
// issuer is one of the client's federated credentials, else a client
// assertion signed with a registered certificate.
func (e *Emulator) validateAssertion(r *http.Request, clientID string, registered client, assertion string) *entraError {
	var unverified jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(assertion, &unverified); err != nil {
		return &entraError{http.StatusUnauthorized, "invalid_client", 50027,
			"JWT token is invalid or malformed."}
	}
	for _, f := range registered.federated {
		if f.issuer == unverified.Issuer {
			return e.validateFederated(clientID, registered, assertion)
		}
	}
	return e.validateClientAssertion(r, clientID, registered, assertion)
}

// validateClientAssertion checks a certificate-signed client assertion
// with golang-jwt (an implementation independent of the client's signer).
func (e *Emulator) validateClientAssertion(r *http.Request, clientID string, registered client, assertion string) *entraError {
	badSignature := func(reason string) *entraError {
		return &entraError{http.StatusUnauthorized, "invalid_client", 700027,
			"Client assertion failed signature validation. [Reason - " + reason + "]"}
	}
	var claims jwt.RegisteredClaims
	var keyErr *entraError
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodPS256.Alg(), jwt.SigningMethodRS256.Alg()}),
		jwt.WithoutClaimsValidation(), // checked below, each with Entra's code
	)
	_, err := parser.ParseWithClaims(assertion, &claims, func(t *jwt.Token) (any, error) {
		key, ee := e.assertionKey(t.Header, registered)
		if ee != nil {
			keyErr = ee
			return nil, errors.New("no key")
		}
		return key, nil
	})
	switch {
	case keyErr != nil:
		return keyErr
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return badSignature("The signature does not verify with the registered certificate's key.")
	case err != nil:
		return badSignature("The assertion could not be validated: " + err.Error())
	}

	if claims.Issuer != clientID || claims.Subject != clientID {
		return &entraError{http.StatusUnauthorized, "invalid_client", 700021,
			fmt.Sprintf("Client assertion application identifier doesn't match 'client_id' parameter. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials . Assertion issuer: '%s', subject: '%s'.", claims.Issuer, claims.Subject)}
	}
	audience := baseURL(r) + r.URL.Path
	if !slices.Contains(claims.Audience, audience) {
		return &entraError{http.StatusUnauthorized, "invalid_client", 700023,
			fmt.Sprintf("Client assertion audience claim does not match Realm issuer. Expected audience: '%s'.", audience)}
	}
	now := e.now()
	if ee := checkAssertionTimes(claims, now, true); ee != nil {
		return ee
	}
	if claims.ID == "" {
		return &entraError{http.StatusUnauthorized, "invalid_client", 50027,
			"JWT token is invalid or malformed: the client assertion has no jti."}
	}
	if ee := e.recordJTI(claims.ID, claims.ExpiresAt.Time, now); ee != nil {
		return ee
	}
	e.assertionsAccepted.Add(1)
	return nil
}

// assertionKey finds the key that must have signed an assertion with
// header: the leaf of a trusted x5c chain for an SNI client, else the
// registered certificate named by x5t#S256 or x5t.
func (e *Emulator) assertionKey(header map[string]any, registered client) (*rsa.PublicKey, *entraError) {
	keyNotFound := func(thumbprint string) *entraError {
		return &entraError{http.StatusUnauthorized, "invalid_client", 700027,
			fmt.Sprintf("Client assertion failed signature validation. [Reason - The key was not found., Thumbprint of key used by client: '%s']", thumbprint)}
	}
	x5tS256, _ := header["x5t#S256"].(string)
	x5t, _ := header["x5t"].(string)

	if rawChain, ok := header["x5c"]; ok && registered.sni != nil {
		chain, err := parseX5C(rawChain)
		if err != nil {
			return nil, keyNotFound("x5c: " + err.Error())
		}
		intermediates := x509.NewCertPool()
		for _, cert := range chain[1:] {
			intermediates.AddCert(cert)
		}
		leaf := chain[0]
		if _, err := leaf.Verify(x509.VerifyOptions{
			Roots:         registered.sni.roots,
			Intermediates: intermediates,
			CurrentTime:   e.now(),
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		}); err != nil {
			return nil, &entraError{http.StatusUnauthorized, "invalid_client", 700027,
				"Client assertion failed signature validation. [Reason - The certificate chain is not trusted for subject name and issuer authentication: " + err.Error() + "]"}
		}
		if leaf.Subject.CommonName != registered.sni.subject {
			return nil, &entraError{http.StatusUnauthorized, "invalid_client", 700027,
				fmt.Sprintf("Client assertion failed signature validation. [Reason - The certificate subject '%s' is not the registered subject name.]", leaf.Subject.CommonName)}
		}
		if x5tS256 != "" && x5tS256 != thumbprintS256(leaf) {
			return nil, keyNotFound(x5tS256)
		}
		pub, ok := leaf.PublicKey.(*rsa.PublicKey)
		if !ok {
			return nil, keyNotFound(x5tS256)
		}
		return pub, nil
	}

	if x5tS256 == "" && x5t == "" {
		return nil, keyNotFound("")
	}
	for _, cert := range registered.certs {
		if (x5tS256 != "" && x5tS256 == thumbprintS256(cert)) || (x5tS256 == "" && x5t == thumbprintSHA1(cert)) {
			// A key credential is valid from the certificate's NotBefore to
			// its NotAfter, as the portal registers it.
			if now := e.now(); now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
				reason := "The key used is expired."
				if now.Before(cert.NotBefore) {
					reason = "The key used is not yet valid."
				}
				sum := sha1.Sum(cert.Raw)
				return nil, &entraError{http.StatusUnauthorized, "invalid_client", 700027,
					fmt.Sprintf("Client assertion failed signature validation. [Reason - %s, Thumbprint of key used by client: '%X', Found key 'Start=%s, End=%s']",
						reason, sum, cert.NotBefore.UTC().Format(time.RFC3339), cert.NotAfter.UTC().Format(time.RFC3339))}
			}
			pub, ok := cert.PublicKey.(*rsa.PublicKey)
			if !ok {
				break
			}
			return pub, nil
		}
	}
	if x5tS256 != "" {
		return nil, keyNotFound(x5tS256)
	}
	return nil, keyNotFound(x5t)
}

// parseX5C decodes an x5c header: standard base64 DER certificates, leaf
// first.
func parseX5C(raw any) ([]*x509.Certificate, error) {
	values, ok := raw.([]any)
	if !ok || len(values) == 0 {
		return nil, errors.New("not a non-empty array")
	}
	chain := make([]*x509.Certificate, 0, len(values))
	for _, v := range values {
		s, ok := v.(string)
		if !ok {
			return nil, errors.New("element is not a string")
		}
		der, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, errors.New("element is not standard base64")
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, errors.New("element is not a certificate")
		}
		chain = append(chain, cert)
	}
	return chain, nil
}

// checkAssertionTimes applies Entra's time rules: exp required and in the
// future; nbf (or iat) not more than AssertionClockSkew in the future; and,
// when limitLifetime, at most MaxAssertionLifetime (plus the skew) between
// nbf (or iat, or now) and exp.
func checkAssertionTimes(claims jwt.RegisteredClaims, now time.Time, limitLifetime bool) *entraError {
	outOfRange := func() *entraError {
		return &entraError{http.StatusUnauthorized, "invalid_client", 700024,
			fmt.Sprintf("Client assertion is not within its valid time range. Current time: %s, assertion valid from %s, expiry time of assertion %s.",
				now.UTC().Format(time.RFC3339), formatClaimTime(claims.NotBefore), formatClaimTime(claims.ExpiresAt))}
	}
	if claims.ExpiresAt == nil || !claims.ExpiresAt.After(now) {
		return outOfRange()
	}
	start := now
	switch {
	case claims.NotBefore != nil:
		start = claims.NotBefore.Time
	case claims.IssuedAt != nil:
		start = claims.IssuedAt.Time
	}
	if start.After(now.Add(AssertionClockSkew)) {
		return outOfRange()
	}
	if limitLifetime && claims.ExpiresAt.Sub(start) > MaxAssertionLifetime+AssertionClockSkew {
		return outOfRange()
	}
	return nil
}

func formatClaimTime(d *jwt.NumericDate) string {
	if d == nil {
		return "(none)"
	}
	return d.UTC().Format(time.RFC3339)
}

// recordJTI remembers a client assertion's jti until it expires, and
// rejects one seen before: a replayed assertion.
func (e *Emulator) recordJTI(jti string, exp, now time.Time) *entraError {
	e.mu.Lock()
	defer e.mu.Unlock()
	for id, until := range e.usedJTIs {
		if until.Add(AssertionClockSkew).Before(now) {
			delete(e.usedJTIs, id)
		}
	}
	if _, seen := e.usedJTIs[jti]; seen {
		return &entraError{http.StatusUnauthorized, "invalid_client", 50013,
			"Assertion failed signature validation: the client assertion jti has already been used (replayed assertion)."}
	}
	e.usedJTIs[jti] = exp
	return nil
}

// validateFederated checks a federated token: signed by the emulator's
// federation key, issued for one of the client's (issuer, subject) pairs,
// for api://AzureADTokenExchange, and not expired. Federated tokens are
// reused until rotated, so their jti is not checked for replay.
func (e *Emulator) validateFederated(clientID string, registered client, assertion string) *entraError {
	var claims jwt.RegisteredClaims
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodRS256.Alg()}),
		jwt.WithoutClaimsValidation(),
	)
	_, err := parser.ParseWithClaims(assertion, &claims, func(t *jwt.Token) (any, error) {
		if kid, _ := t.Header["kid"].(string); kid != e.federationKid {
			return nil, errors.New("unknown kid")
		}
		return &e.federationKey.PublicKey, nil
	})
	if err != nil {
		return &entraError{http.StatusUnauthorized, "invalid_client", 700027,
			"Client assertion failed signature validation. [Reason - The federated token's signature does not verify with the issuer's keys.]"}
	}
	if !slices.Contains(claims.Audience, FederatedAudience) {
		return &entraError{http.StatusBadRequest, "invalid_client", 700212,
			fmt.Sprintf("No matching federated identity record found for presented assertion audience '%s'.", firstOrEmpty(claims.Audience))}
	}
	if !slices.Contains(registered.federated, federatedSubject{issuer: claims.Issuer, subject: claims.Subject}) {
		return &entraError{http.StatusBadRequest, "invalid_request", 70021,
			fmt.Sprintf("No matching federated identity record found for presented assertion. Assertion Issuer: '%s'. Assertion Subject: '%s'. Assertion Audience: '%s'.", claims.Issuer, claims.Subject, firstOrEmpty(claims.Audience))}
	}
	if ee := checkAssertionTimes(claims, e.now(), false); ee != nil {
		ee.status = http.StatusBadRequest
		return ee
	}
	e.assertionsAccepted.Add(1)
	return nil
}

func firstOrEmpty(values []string) string {
	if len(values) == 0 {
		return ""
	}
	return values[0]
}

// thumbprintS256 is the x5t#S256 of cert: base64url SHA-256 of its DER.
func thumbprintS256(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// thumbprintSHA1 is the x5t of cert: base64url SHA-1 of its DER.
func thumbprintSHA1(cert *x509.Certificate) string {
	sum := sha1.Sum(cert.Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}
