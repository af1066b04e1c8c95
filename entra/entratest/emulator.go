// Package entratest is an Entra ID-compatible token endpoint for tests and
// local development: the client-credentials and on-behalf-of flows of the
// v2.0 token endpoint, with Entra's error shapes (AADSTS codes, trace and correlation IDs), RS256
// tokens and the JWKS and OpenID discovery documents that verify them.
//
// It is an ordinary package (not a _test file) so that other packages' tests
// and cmd/entra-emulator can use it. It imports nothing from Caddy or Redis.
package entratest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultTenantID is the tenant the emulator serves when Options.TenantID is
// empty.
const DefaultTenantID = "00000000-0000-4000-8000-000000000001"

// DefaultTokenLifetime is the token lifetime when Options.TokenLifetime is 0.
const DefaultTokenLifetime = time.Hour

// Options configures an Emulator.
type Options struct {
	// TenantID is the emulator's own tenant, where its clients are
	// registered; requests for a tenant not served (see AddTenant) fail
	// with AADSTS90002. Default DefaultTenantID. Letters, digits, '.', '-'
	// and '_' only.
	TenantID string

	// TokenLifetime is the lifetime of issued tokens (expires_in and the exp
	// claim), whole seconds, at least 1s. Default DefaultTokenLifetime (1h).
	TokenLifetime time.Duration

	// Issuer is the iss claim, in every tenant. Default
	// "https://sts.windows.net/{tenant}/", as in Entra's v1.0 access tokens.
	Issuer string

	// Now is the emulator's clock for iat/nbf/exp and Verify. Default
	// time.Now.
	Now func() time.Time
}

// client is one registered app registration and its credentials.
type client struct {
	secret    string
	objectID  string              // stable per client: sub and oid of its tokens
	certs     []*x509.Certificate // certificate credentials, by thumbprint
	sni       *sniRegistration    // subject name and issuer authentication
	federated []federatedSubject  // federated identity credentials
	appIDURIs []string            // App ID URIs besides api://<client ID>
}

// Emulator is an Entra ID-compatible token endpoint. It implements
// http.Handler and is safe for concurrent use. Make it with New or NewServer.
//
// Routes (the first three for the tenants it serves only):
//
//	POST /{tenant}/oauth2/v2.0/token                   client credentials, on-behalf-of
//	GET  /{tenant}/discovery/v2.0/keys
//	GET  /{tenant}/v2.0/.well-known/openid-configuration
//	GET  /metadata/identity/oauth2/token               managed identity (IMDS)
//	GET  /msi/token                                    managed identity (App Service)
//
// {tenant} is a tenant served or one of its domain names (AddDomain).
type Emulator struct {
	tenantID string
	issuer   string // Options.Issuer, "" for each tenant's own
	now      func() time.Time
	key      *rsa.PrivateKey
	kid      string // base64url SHA-1 thumbprint of the certificate, as Entra
	certDER  []byte
	mux      *http.ServeMux

	// federationKey signs the tokens of IssueFederatedToken, as an
	// external OIDC issuer (a Kubernetes cluster) would.
	federationKey *rsa.PrivateKey
	federationKid string

	tokenRequests        atomic.Int64
	concurrent           gauge        // token requests being answered
	onIssue              func(Issued) // see OnIssue; guarded by mu
	onBehalfOfRequests   atomic.Int64
	connections          atomic.Int64
	openConnections      atomic.Int64
	issuedTokens         atomic.Int64
	assertionsSeen       atomic.Int64
	assertionsAccepted   atomic.Int64
	basicAuthentications atomic.Int64
	discoveryRequests    atomic.Int64

	mu               sync.Mutex
	clients          map[string]client
	lifetime         time.Duration
	format           TokenFormat
	omitClientClaims bool
	responseDelay    time.Duration
	failures         []Failure // queued, consumed one per token request
	failAll          *Failure  // set by FailNext(-1, f)

	tenants           map[string]bool            // served besides tenantID
	domains           map[string]string          // lower-case domain name -> tenant (AddDomain)
	userChallenges    map[string]string          // user oid -> claims challenge
	withheldConsent   map[[2]string]bool         // {client ID, scope} not consented
	usedJTIs          map[string]time.Time       // client assertion jti -> exp
	managedIdentities map[string]ManagedIdentity // by client ID
	systemIdentity    string                     // client ID of the system-assigned identity
	identityHeader    string                     // App Service X-IDENTITY-HEADER secret
}

// New returns an Emulator with a fresh RSA-2048 signing key and no clients
// (register them with AddClient).
func New(opts Options) (*Emulator, error) {
	tenantID := opts.TenantID
	if tenantID == "" {
		tenantID = DefaultTenantID
	}
	if !isSafeSegment(tenantID) {
		return nil, errors.New("entratest: tenant ID must contain only letters, digits, '.', '-' and '_'")
	}
	lifetime := opts.TokenLifetime
	if lifetime == 0 {
		lifetime = DefaultTokenLifetime
	}
	if lifetime < 0 {
		return nil, errors.New("entratest: token lifetime must not be negative")
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("entratest: generating signing key: %w", err)
	}
	certDER, err := selfSignedCert(key)
	if err != nil {
		return nil, fmt.Errorf("entratest: making signing certificate: %w", err)
	}
	thumbprint := sha1.Sum(certDER)
	federationKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("entratest: generating federation key: %w", err)
	}

	e := &Emulator{
		tenantID: tenantID,
		issuer:   opts.Issuer,
		now:      now,
		key:      key,
		kid:      base64.RawURLEncoding.EncodeToString(thumbprint[:]),
		certDER:  certDER,
		clients:  make(map[string]client),
		lifetime: lifetime,

		federationKey:     federationKey,
		federationKid:     newUUID(),
		tenants:           make(map[string]bool),
		domains:           make(map[string]string),
		userChallenges:    make(map[string]string),
		withheldConsent:   make(map[[2]string]bool),
		usedJTIs:          make(map[string]time.Time),
		managedIdentities: make(map[string]ManagedIdentity),
	}
	e.mux = http.NewServeMux()
	e.mux.HandleFunc("POST /{tenant}/oauth2/v2.0/token", e.handleToken)
	e.mux.HandleFunc("GET /{tenant}/discovery/v2.0/keys", e.handleKeys)
	e.mux.HandleFunc("GET /{tenant}/v2.0/.well-known/openid-configuration", e.handleOpenIDConfiguration)
	e.mux.HandleFunc("GET "+IMDSPath, e.handleIMDS)
	e.mux.HandleFunc("GET "+AppServicePath, e.handleAppService)
	return e, nil
}

// NewServer starts a new Emulator on a loopback httptest.Server
// (127.0.0.1, a free port). The caller closes the server. Use
// server.URL as the authority host.
func NewServer(opts Options) (*Emulator, *httptest.Server, error) {
	e, err := New(opts)
	if err != nil {
		return nil, nil, err
	}
	srv := httptest.NewUnstartedServer(e)
	srv.Config.ConnState = e.ConnState
	srv.Start()
	return e, srv, nil
}

// ConnState counts the connections a server of the emulator accepts and
// holds open: set it as the http.Server's ConnState (NewServer does).
func (e *Emulator) ConnState(_ net.Conn, state http.ConnState) {
	switch state {
	case http.StateNew:
		e.connections.Add(1)
		e.openConnections.Add(1)
	case http.StateClosed, http.StateHijacked:
		e.openConnections.Add(-1)
	}
}

// Connections returns the number of connections accepted so far by the
// servers whose ConnState is the emulator's.
func (e *Emulator) Connections() int64 { return e.connections.Load() }

// OpenConnections returns the number of those connections still open.
func (e *Emulator) OpenConnections() int64 { return e.openConnections.Load() }

// ServeHTTP serves the emulator's routes.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.mux.ServeHTTP(w, r)
}

// AddClient registers an app registration (client ID and secret). Any number
// may be registered; adding an existing client ID replaces its secret and
// keeps its other credentials.
func (e *Emulator) AddClient(clientID, secret string) {
	e.updateClient(clientID, func(c *client) { c.secret = secret })
}

// updateClient applies change to the registration of clientID, creating it
// when needed.
func (e *Emulator) updateClient(clientID string, change func(*client)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c, ok := e.clients[clientID]
	if !ok {
		sum := sha256.Sum256([]byte(e.tenantID + "\x00" + clientID))
		c.objectID = uuidFromBytes(sum[:16])
	}
	change(&c)
	e.clients[clientID] = c
}

// SetTokenLifetime sets the lifetime of tokens issued from now on. Values
// under one second are raised to one second (expires_in is whole seconds).
func (e *Emulator) SetTokenLifetime(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.lifetime = d
}

// SetResponseDelay delays every successful token response by d (0, the
// default, for none), honouring the request's cancellation. It lets tests
// hold a refresh in flight.
func (e *Emulator) SetResponseDelay(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.responseDelay = d
}

// FailNext makes the next n token requests fail as f describes; calls queue
// up behind each other. n < 0 makes every request fail as f until
// ClearFailures (queued failures still come first).
func (e *Emulator) FailNext(n int, f Failure) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if n < 0 {
		e.failAll = &f
		return
	}
	for range n {
		e.failures = append(e.failures, f)
	}
}

// ClearFailures drops all queued failures and ends FailNext(-1, ...).
func (e *Emulator) ClearFailures() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.failures = nil
	e.failAll = nil
}

// nextFailure consumes the failure for this request, if any.
func (e *Emulator) nextFailure() (Failure, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.failures) > 0 {
		f := e.failures[0]
		e.failures = e.failures[1:]
		return f, true
	}
	if e.failAll != nil {
		return *e.failAll, true
	}
	return Failure{}, false
}

// TokenRequests returns the number of token requests so far (POSTs to the
// token endpoint and GETs of the managed identity endpoints), failures
// included.
func (e *Emulator) TokenRequests() int64 { return e.tokenRequests.Load() }

// AssertionsSeen returns the number of token requests that carried a
// client_assertion (certificate or federated), valid or not.
func (e *Emulator) AssertionsSeen() int64 { return e.assertionsSeen.Load() }

// AssertionsAccepted returns the number of client assertions that passed
// validation.
func (e *Emulator) AssertionsAccepted() int64 { return e.assertionsAccepted.Load() }

// IssuedTokens returns the number of tokens issued so far.
func (e *Emulator) IssuedTokens() int64 { return e.issuedTokens.Load() }

// TenantID returns the tenant the emulator serves.
func (e *Emulator) TenantID() string { return e.tenantID }

// TokenPath returns the token endpoint's path, "/{tenant}/oauth2/v2.0/token".
func (e *Emulator) TokenPath() string { return "/" + e.tenantID + "/oauth2/v2.0/token" }

// Issuer returns the iss claim of the tokens issued in the emulator's own
// tenant.
func (e *Emulator) Issuer() string { return e.issuerOf(e.tenantID) }

// issuerOf is the iss claim of the tokens issued in tenant.
func (e *Emulator) issuerOf(tenant string) string {
	if e.issuer != "" {
		return e.issuer
	}
	return "https://sts.windows.net/" + tenant + "/"
}

// AddTenant serves tenant too: its token endpoint, keys and discovery
// document answer, with the same signing key, and tokens issued there carry
// its tid and issuer. Clients registered in the emulator's own tenant are
// multi-tenant applications, consented in every tenant served. The ID is
// letters, digits, '.', '-' and '_' only.
func (e *Emulator) AddTenant(tenant string) error {
	if !isSafeSegment(tenant) {
		return errors.New("entratest: tenant ID must contain only letters, digits, '.', '-' and '_'")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tenants[tenant] = true
	return nil
}

// AddDomain makes domain (a verified domain name such as
// contoso.onmicrosoft.com) a name of tenant, which the emulator serves (its
// own, or one added by AddTenant): requests to /{domain}/... are answered
// as the tenant's, as Entra does, so tokens issued there carry the
// tenant's ID in tid and iss, and its OpenID configuration names the
// tenant's ID in its issuer and endpoints.
func (e *Emulator) AddDomain(domain, tenant string) error {
	if !isSafeSegment(domain) {
		return errors.New("entratest: a domain name must contain only letters, digits, '.', '-' and '_'")
	}
	if !e.serves(tenant) {
		return errors.New("entratest: the domain's tenant is not served (AddTenant)")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.domains[strings.ToLower(domain)] = tenant
	return nil
}

// tenantOf returns the tenant a request's {tenant} path segment names: a
// tenant served, or the tenant of a domain name (AddDomain).
func (e *Emulator) tenantOf(segment string) (string, bool) {
	if e.serves(segment) {
		return segment, true
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	tenant, ok := e.domains[strings.ToLower(segment)]
	return tenant, ok
}

// DiscoveryRequests returns the number of requests for an OpenID
// configuration document (/{tenant}/v2.0/.well-known/openid-configuration)
// so far, for any tenant or domain, served or not.
func (e *Emulator) DiscoveryRequests() int64 { return e.discoveryRequests.Load() }

// serves reports whether the emulator serves tenant.
func (e *Emulator) serves(tenant string) bool {
	if tenant == e.tenantID {
		return true
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.tenants[tenant]
}

// KeyID returns the kid of the signing key (its certificate's base64url
// SHA-1 thumbprint, as Entra's kid and x5t).
func (e *Emulator) KeyID() string { return e.kid }

// PublicKey returns the key that verifies issued tokens.
func (e *Emulator) PublicKey() *rsa.PublicKey { return &e.key.PublicKey }

// selfSignedCert makes the certificate published in the JWKS x5c, as Entra
// publishes its signing keys.
func selfSignedCert(key *rsa.PrivateKey) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "entratest token signing"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(5 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	return x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
}

// newUUID returns a random version-4 UUID, as Entra's trace and correlation
// IDs look.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return uuidFromBytes(b[:])
}

func uuidFromBytes(b []byte) string {
	var u [16]byte
	copy(u[:], b)
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	h := hex.EncodeToString(u[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func isSafeSegment(s string) bool {
	if s == "" || s == "." || s == ".." {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
		default:
			return false
		}
	}
	return true
}
