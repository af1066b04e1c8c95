// Package entraapp is the entra app: the global configuration, the token
// clients and pooled cache, the admin API, the `caddy entra` command and
// metrics. Handlers find it with FromContext and use its exported API only.
package entraapp

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/tokencache"
	"github.com/caddy-entra/caddy-entra/tokencache/redisstore"
)

func init() {
	caddy.RegisterModule(App{})
}

// DefaultRefreshWindow is the default refresh_window: a token with this
// much or less left is never injected.
const DefaultRefreshWindow = 60 * time.Second

// MaxRefreshWindow is the largest refresh_window: Entra ID tokens live 60
// to 90 minutes.
const MaxRefreshWindow = 30 * time.Minute

// The least value of each duration option, refused below at load: less
// makes no sense, though it would run.
const (
	// MinRefreshWindow: a token with less left may expire on its way
	// downstream.
	MinRefreshWindow = time.Second
	// MinWaitTimeout: no token request is answered sooner, so every
	// request finding no usable token would fail while its refresh goes on.
	MinWaitTimeout = 100 * time.Millisecond
	// MinRedisTimeout: no Redis answers sooner, so every call would time
	// out and the replicas would stop sharing tokens, silently.
	MinRedisTimeout = time.Millisecond
	// MinRedisMaxConnectionAge: connections would be dialled and
	// authenticated anew faster than they are used.
	MinRedisMaxConnectionAge = time.Second
)

// App is the entra app: the Entra ID configuration every handler shares,
// the token clients and the pooled token cache.
//
// Secrets may be {env.*} or {file.*} placeholders, resolved at provision
// time, so GET /config/ shows the placeholder. The cache outlives reloads
// that keep its store settings (tokens, Redis client, refreshes in flight);
// the newest started config's credentials make every token request.
type App struct {
	// IdentityConfig is the default identity of every application that
	// does not set its own.
	IdentityConfig

	// RefreshWindow is how much lifetime a token must have left to be
	// injected: at least 1s, at most 30m. Default 60s.
	RefreshWindow caddy.Duration `json:"refresh_window,omitempty"`

	// RefreshAhead is the fraction of a token's lifetime after which it is
	// refreshed in the background, unless Entra says (refresh_in). Default 0.5.
	RefreshAhead float64 `json:"refresh_ahead,omitempty"`

	// WaitTimeout bounds a request's wait for a token: at least 100ms.
	// Default 5s.
	WaitTimeout caddy.Duration `json:"wait_timeout,omitempty"`

	// TokenRequestConcurrency bounds this replica's token requests in
	// flight; background refreshes use at most half. Default 16.
	TokenRequestConcurrency int `json:"token_request_concurrency,omitempty"`

	// Redis shares tokens between replicas and coordinates their refreshes.
	// Default: an in-process cache per replica.
	Redis *RedisConfig `json:"redis,omitempty"`

	// Applications maps the names entra_token uses to their scopes and,
	// optionally, identities. At least one is required.
	Applications map[string]*Application `json:"applications,omitempty"`

	// Prefetch fetches every application's token at load, in the
	// background, and keeps it refreshed without traffic. Default false.
	Prefetch bool `json:"prefetch,omitempty"`

	// ClientCapabilities are declared in every token request (xms_cc), e.g.
	// "cp1" for continuous access evaluation. Not with a managed identity.
	// Default none.
	ClientCapabilities []string `json:"client_capabilities,omitempty"`

	// Hosts are the DNS names, besides IP addresses, localhost and
	// *.localhost, the handlers accept in Host (e.g. a Compose service
	// name). Default none: another name may be a DNS-rebinding web page.
	Hosts []string `json:"hosts,omitempty"`

	hosts   map[string]struct{} // Hosts, checked and lowercased
	cache   *tokencache.Cache
	poolKey string
	// handles are this config's registrations by application, but for the
	// on-behalf-of ones, which have exchangers instead; only a
	// system-assigned identity's is replaced (rekey, under lifecycle.mu).
	handles    map[string]*atomic.Pointer[tokencache.Handle]
	exchangers map[string]*exchanger // on-behalf-of applications
	lifecycle  *lifecycleGuard       // a pointer: Caddy copies module values
	resolved   []resolvedApplication // hold credentials: never logged
	logger     *zap.Logger
	ctx        caddy.Context // Provision's, for Start
	refusals   *RefusalLog   // nil: every refusal is logged
}

// RedisConfig is the shared token store.
type RedisConfig struct {
	// URL is redis://[user:password@]host:port[/db] or rediss://. Either
	// URL or Addrs is required.
	URL string `json:"url,omitempty"`

	// Addrs are host:port addresses: Cluster nodes, or Sentinels with
	// MasterName.
	Addrs []string `json:"addrs,omitempty"`

	// MasterName is the Sentinel master name.
	MasterName string `json:"master_name,omitempty"`

	// Username and Password authenticate to Redis (ACL). Optional.
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`

	// DB is the database number (not for Cluster). Default 0, which is
	// no DB: it does not override a URL's /db, a non-zero DB does.
	DB int `json:"db,omitempty"`

	// TLS connects with TLS (implied by rediss://). Default false.
	TLS bool `json:"tls,omitempty"`

	// TLSCA is a PEM file of the CAs that verify the server. Implies TLS.
	// Default: the system roots.
	TLSCA string `json:"tls_ca,omitempty"`

	// TLSServerName is the name the server certificate must carry.
	// Default: the host dialled.
	TLSServerName string `json:"tls_server_name,omitempty"`

	// KeyPrefix is put before every key. Default "entra:".
	KeyPrefix string `json:"key_prefix,omitempty"`

	// Timeout bounds every Redis call; a slower Redis is treated as down.
	// At least 1ms. Default 100ms.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// EncryptionKeys (base64 of 32 bytes each) seal records with
	// AES-256-GCM: the first encrypts, all decrypt. Required unless
	// InsecurePlaintext; make one with `head -c 32 /dev/urandom | base64`.
	EncryptionKeys []string `json:"encryption_keys,omitempty"`

	// InsecurePlaintext shares tokens unsealed: any Redis writer can
	// replace or withhold them, any reader reads them. Excludes
	// EncryptionKeys. Default false.
	InsecurePlaintext bool `json:"insecure_plaintext,omitempty"`

	// Entra authenticates to Redis with Entra ID (Azure Cache for Redis,
	// Azure Managed Redis): a token for https://redis.azure.com/.default as
	// the password, its oid as the user name. Requires TLS off loopback;
	// excludes username and password. Default none.
	Entra *RedisEntra `json:"entra,omitempty"`
}

// RedisEntra is Redis with Entra ID authentication.
type RedisEntra struct {
	// Application whose identity gets the Redis tokens. Default: the app's
	// default identity.
	Application string `json:"application,omitempty"`
	// MaxConnectionAge retires older connections (and renews the
	// subscription), so none outlives its token. At least 1s. Default 10m.
	MaxConnectionAge caddy.Duration `json:"max_connection_age,omitempty"`
}

// Application is one application: its scopes and, optionally, its own
// identity, overriding the default field by field (a credential only
// together with the client ID).
type Application struct {
	// Scopes of its tokens, e.g. https://graph.microsoft.com/.default. At
	// least one is required, each listed once.
	Scopes []string `json:"scopes,omitempty"`

	// Prefetch overrides the app's prefetch. Default: the app's.
	Prefetch *bool `json:"prefetch,omitempty"`

	// ClientCapabilities override the app's. Default (absent or empty,
	// which is not a way to declare none): the app's.
	ClientCapabilities []string `json:"client_capabilities,omitempty"`

	// OnBehalfOf makes entra_token exchange each request's user token for
	// one on the user's behalf. Default nil: the application's own tokens.
	OnBehalfOf *OnBehalfOfConfig `json:"on_behalf_of,omitempty"`

	IdentityConfig
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "entra",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision sets up the logger and metrics, subscribes commit to the
// config's started event, and warns about secrets written in the config
// and about insecure_plaintext.
func (a *App) Provision(ctx caddy.Context) error {
	a.ctx = ctx
	a.logger = ctx.Logger()
	a.refusals = new(RefusalLog)
	if err := RegisterMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering metrics: %v", err)
	}
	events, err := ctx.App("events")
	if err == nil {
		err = events.(*caddyevents.App).On("started", committer{a})
	}
	if err != nil {
		return fmt.Errorf("subscribing to the config's started event: %v", err)
	}
	a.warnLiteralSecrets()
	a.warnInsecurePlaintext()
	return nil
}

func (a *App) warnInsecurePlaintext() {
	if a.Redis != nil && a.Redis.InsecurePlaintext && len(a.Redis.EncryptionKeys) == 0 {
		a.logger.Warn("redis insecure_plaintext: tokens are shared through Redis unsealed; any Redis writer can replace " +
			"or withhold the tokens this sidecar injects (within the checks made of every record read), and any Redis " +
			"reader reads them; set encryption_key instead (head -c 32 /dev/urandom | base64)")
	}
}

// Validate resolves and checks every setting, and only when all are valid
// makes the token clients and registers them with the pooled cache. It runs
// before any handler provisions and waits on no network.
func (a *App) Validate() error {
	return a.provision(caddy.NewReplacer())
}

// provision is Validate's work, callable without a caddy.Context (tests).
func (a *App) provision(repl *caddy.Replacer) error {
	hosts, err := checkHosts(a.Hosts)
	if err != nil {
		return err
	}
	a.hosts = hosts
	s, err := a.resolveSettings(repl)
	if err != nil {
		return err
	}
	return a.register(s)
}

// ProvisionForTest is Provision and Validate without a caddy.Context,
// logging to logger: for the handlers' tests, which run no Caddy.
func (a *App) ProvisionForTest(logger *zap.Logger) error {
	a.logger, a.refusals = logger, new(RefusalLog)
	return a.provision(caddy.NewReplacer())
}

// Start warns of certificate-bound routes; the rest waits for commit.
func (a *App) Start() error {
	a.warnCertificateBoundRoutes(a.ctx)
	return nil
}

// committer runs commit on Caddy's "started" event, which Caddy emits once
// every app of the config has started. An app may start and be stopped
// again when another fails to, and the running config serves on. Its field
// is unexported: the events app logs its handlers (debug, as JSON), and an
// App's exported fields may hold a literal secret.
type committer struct{ app *App }

// Handle implements caddyevents.Handler.
func (c committer) Handle(_ context.Context, e caddy.Event) error {
	if e.Origin() == nil { // Caddy's own, not a module's
		c.app.commit()
	}
	return nil
}

// commit activates this config's handles, routes the cache's (and
// go-redis's) logs to it and starts its operations. A config Caddy does
// not commit to never takes the cache's logger nor, while a running config
// shares a key, makes a token request with its credential.
func (a *App) commit() {
	a.takeLogs()
	a.activate()
	a.startOperations()
}

// takeLogs routes the cache's (and go-redis's) logs to this config.
func (a *App) takeLogs() {
	a.cache.SetLogger(a.logger)
	if a.Redis != nil {
		redisstore.RouteLogs(a.logger.Named("redis"))
	}
}

// activate lets this config's handles make token requests.
func (a *App) activate() {
	a.lifecycle.mu.Lock()
	defer a.lifecycle.mu.Unlock()
	a.lifecycle.started = true
	for _, h := range a.handles {
		h.Load().Activate()
	}
}

// Stop implements caddy.App; resources are freed by Cleanup.
func (a *App) Stop() error {
	a.stopOperations()
	return nil
}

// Cleanup releases this config's handles and its hold on the pooled cache
// and exchangers (the last holder closes them). Caddy cleans an old config
// up while it still serves its last requests: a released handle answers
// them with a token or, once its cache is closed, a retryable 503.
func (a *App) Cleanup() error {
	a.stopOperations()
	releaseExchangers(a.exchangers)
	for _, ra := range a.resolved {
		ra.Client.CloseIdleConnections() // a mutual TLS client's own connections
	}
	if a.cache == nil {
		return nil
	}
	a.lifecycle.mu.Lock()
	a.lifecycle.cleanedUp = true
	for _, h := range a.handles {
		h.Load().Release()
	}
	a.lifecycle.mu.Unlock()
	if _, err := cachePool.Delete(a.poolKey); err != nil {
		a.logger.Error("releasing the token cache", zap.Error(err))
	}
	return nil
}

// Token returns the named application's token record, cached or freshly
// requested: the counterpart of better-auth-client-credential's
// getClientCredentialToken.
func (a *App) Token(ctx context.Context, applicationName string) (tokencache.Record, error) {
	h, err := a.configuredHandle(applicationName)
	if err != nil {
		return tokencache.Record{}, err
	}
	return h.Token(ctx)
}

// configuredHandle is handle, or the answer to a name without one: an
// on-behalf-of application, or a name not configured.
func (a *App) configuredHandle(name string) (*tokencache.Handle, error) {
	if h, ok := a.handle(name); ok {
		return h, nil
	}
	if a.exchangers[name] != nil {
		return nil, userTokenMissing(fmt.Sprintf("application %q exchanges users' tokens (on_behalf_of): "+
			"it has no token of its own", name))
	}
	return nil, &answerError{Answer{Status: http.StatusNotFound, Code: CodeApplicationNotFound,
		Message: fmt.Sprintf("application %q is not configured", name)}}
}

// handle returns the current handle of the named application; an
// on-behalf-of application has none.
func (a *App) handle(name string) (*tokencache.Handle, bool) {
	ah, ok := a.handles[name]
	if !ok {
		return nil, false
	}
	return ah.Load(), true
}

// PurgeRejected drops accessToken, which downstream refused, if it is still
// the application's current token, reporting whether it did.
func (a *App) PurgeRejected(ctx context.Context, applicationName, accessToken string) bool {
	h, ok := a.handle(applicationName)
	return ok && h.PurgeRejected(ctx, accessToken)
}

// LastFailure is the failure state of the application's token requests
// (nil after a success, for an on-behalf-of application, or for a name not
// configured).
func (a *App) LastFailure(applicationName string) *tokencache.Failure {
	if h, ok := a.handle(applicationName); ok {
		return h.Status().Failure
	}
	return nil
}

// ApplicationNames lists the configured application names, sorted.
func (a *App) ApplicationNames() []string {
	return slices.Sorted(maps.Keys(a.Applications))
}

func (a *App) configuredNames() string { return strings.Join(a.ApplicationNames(), ", ") }

// DeclaresCapabilities reports whether the application's token requests
// declare client capabilities, so a downstream claims challenge may revoke
// its tokens (see RefreshForClaims).
func (a *App) DeclaresCapabilities(applicationName string) bool {
	for _, ra := range a.resolved {
		if ra.Name == applicationName {
			return len(ra.Config.ClientCapabilities) > 0 && ra.OnBehalfOf == nil
		}
	}
	return false
}

// RefreshForClaims replaces the application's token, which downstream
// answered with a claims challenge (the claims JSON), by one requested with
// those claims: one request for the fleet, as a forced refresh
// (tokencache.Handle.TryRefresh). Its failure (the endpoint refusing the
// claims) is returned here only: it pauses none of the application's token
// requests, and the current token is kept. Errors are as Token's.
func (a *App) RefreshForClaims(ctx context.Context, applicationName, challenge string) (tokencache.Record, error) {
	h, err := a.configuredHandle(applicationName)
	if err != nil {
		return tokencache.Record{}, err
	}
	return h.TryRefresh(entra.WithClaimsChallenge(ctx, challenge))
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.Validator    = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)

	_ caddyevents.Handler = committer{}
)
