// Package entraapp is the entra app: the global Entra ID configuration
// (its Caddyfile option), the token clients and the pooled token cache, the
// admin API (admin.api.entra), the `caddy entra` command and the app's
// metrics. The HTTP handlers under caddymodule find the app with
// FromContext and use its exported API only.
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
	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/tokencache"
	"github.com/caddy-entra/caddy-entra/tokencache/redisstore"
)

func init() {
	caddy.RegisterModule(App{})
}

// DefaultRefreshWindow is the refresh_window used when none is configured: a
// token with this much or less left is never injected.
const DefaultRefreshWindow = 60 * time.Second

// MaxRefreshWindow is the largest refresh_window accepted: Entra ID access
// tokens live 60 to 90 minutes.
const MaxRefreshWindow = 30 * time.Minute

// App is the entra app: the Entra ID configuration shared by every
// entra_token handler. It owns the token clients and the token cache.
//
// Secrets may be given as {env.*} or {file.*} placeholders; they are resolved
// when the app is provisioned, so the JSON config (and the admin API's
// GET /config/) shows the placeholder, not the secret.
//
// The cache outlives config reloads: a reload that keeps the same store
// settings keeps the cached tokens, the Redis client and any refresh in
// flight, so it makes no token request. Each config holds its own handles
// on the pooled cache; the newest started config's credentials make every
// token request.
type App struct {
	// IdentityConfig is the default identity: tenant, client and credential
	// of every application that does not set its own.
	IdentityConfig

	// RefreshWindow is how much lifetime a token must have left to be
	// injected; a token with less is refreshed first. Default 60s.
	RefreshWindow caddy.Duration `json:"refresh_window,omitempty"`

	// RefreshAhead is the fraction of a token's lifetime after which it is
	// refreshed in the background, when the token endpoint does not say
	// (Entra's refresh_in). Between 0 and 1; default 0.5.
	RefreshAhead float64 `json:"refresh_ahead,omitempty"`

	// WaitTimeout bounds how long a request waits for a token when no
	// usable one is cached. Default 5s.
	WaitTimeout caddy.Duration `json:"wait_timeout,omitempty"`

	// TokenRequestConcurrency bounds the token requests this replica makes
	// at once; background refreshes (prefetch included) use at most half,
	// so a request waiting for a token never queues behind a warm-up.
	// Default 16.
	TokenRequestConcurrency int `json:"token_request_concurrency,omitempty"`

	// Redis, when set, shares tokens between replicas through Redis and
	// coordinates their refreshes with a lock. Default: an in-process memory
	// cache per replica.
	Redis *RedisConfig `json:"redis,omitempty"`

	// Applications maps an application name, as used by entra_token, to what
	// its tokens are for and, optionally, whose they are. At least one is
	// required.
	Applications map[string]*Application `json:"applications,omitempty"`

	// Prefetch requests every application's token when the config is
	// loaded, in the background (Caddy's start does not wait), and keeps it
	// refreshed without traffic, retrying after failures. An application
	// may set its own. Default false: tokens are fetched on first use.
	Prefetch bool `json:"prefetch,omitempty"`

	// ClientCapabilities are the client capabilities every application
	// declares in its token requests (the xms_cc claims request), e.g.
	// "cp1" for continuous access evaluation: Graph and other CAE-aware
	// APIs then issue long-lived tokens and answer a revocation with a
	// claims challenge. An application may set its own. Not with a managed
	// identity. Default none.
	ClientCapabilities []string `json:"client_capabilities,omitempty"`

	// Hosts are the names, besides IP addresses, localhost and *.localhost,
	// that entra_token, entra_ready and entra_token_endpoint accept in a
	// request's Host (its port is not compared): e.g. the Docker Compose
	// service name the application calls the sidecar by. DNS names only, no
	// port, scheme or wildcard. Default none: any other name may be a web
	// page that rebound its DNS name to this machine, and is refused.
	Hosts []string `json:"hosts,omitempty"`

	// hosts is Hosts checked and lowercased.
	hosts   map[string]struct{}
	cache   *tokencache.Cache
	poolKey string
	// handles are this config's registrations in the pooled cache, by
	// application name. cache and the map do not change after Validate; a
	// system-assigned identity's handle is replaced once (see rekey),
	// ordered with Start and Cleanup by lifecycle.
	handles map[string]*atomic.Pointer[tokencache.Handle]
	// exchangers are the on-behalf-of applications' exchangers, by name.
	exchangers map[string]*exchanger
	lifecycle  *lifecycleGuard // a pointer: Caddy copies module values
	// resolved are the applications' settings Validate resolved (they hold
	// credentials: never logged).
	resolved []resolvedApplication
	// clients describe each application's client (never its credential)
	// for the admin API; see remember.
	clients map[string]clientInfo
	logger  *zap.Logger
	ctx     caddy.Context // Provision's, for Start
	// refusals limits the log entries of requests refused as possibly from
	// a web page, for every handler of this app (a pointer: Caddy copies
	// module values; nil before Provision, then every entry is logged).
	refusals *refusalLog
}

// RedisConfig is the shared token store.
type RedisConfig struct {
	// URL is a redis:// or rediss:// URL
	// (redis://[user:password@]host:port[/db]). Either URL or Addrs is
	// required. Placeholders are resolved at provision time.
	URL string `json:"url,omitempty"`

	// Addrs are host:port addresses: several for Redis Cluster, or the
	// Sentinels when MasterName is set.
	Addrs []string `json:"addrs,omitempty"`

	// MasterName is the Sentinel master name; set it to use Sentinel.
	MasterName string `json:"master_name,omitempty"`

	// Username and Password authenticate to Redis (ACL). Optional.
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`

	// DB is the database number (not for Cluster). Default 0.
	DB int `json:"db,omitempty"`

	// TLS connects with TLS (implied by a rediss:// URL), verifying the
	// server against the system roots. Default false.
	TLS bool `json:"tls,omitempty"`

	// TLSCA is a PEM file of the CA certificates that verify the server,
	// instead of the system roots (a private CA). Implies TLS.
	TLSCA string `json:"tls_ca,omitempty"`

	// TLSServerName is the name the server certificate must carry. Default:
	// the host of the address dialled.
	TLSServerName string `json:"tls_server_name,omitempty"`

	// KeyPrefix is put before every key the sidecar writes. Default "entra:".
	KeyPrefix string `json:"key_prefix,omitempty"`

	// Timeout bounds every Redis call; a slower Redis is treated as down
	// and each replica goes on with its own cache. Default 100ms.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// EncryptionKeys, each the base64 of 32 random bytes, seal the records
	// with AES-256-GCM. The first encrypts; all decrypt, so a key can be
	// rotated by putting the new one first. Required unless
	// InsecurePlaintext is set; make one with
	// `head -c 32 /dev/urandom | base64`.
	EncryptionKeys []string `json:"encryption_keys,omitempty"`

	// InsecurePlaintext shares tokens through Redis in plaintext, without
	// EncryptionKeys: then anyone who can write to Redis can replace the
	// injected token (within the checks a replica makes of every record
	// it reads) or withhold it, and anyone who can read Redis reads the
	// tokens. It must be stated to use Redis without a key, and cannot be
	// combined with one; a warning is logged at load. Default false.
	InsecurePlaintext bool `json:"insecure_plaintext,omitempty"`

	// Entra authenticates to Redis with Entra ID instead of a password
	// (Azure Cache for Redis, Azure Managed Redis): each new connection's
	// password is a token for https://redis.azure.com/.default of the
	// sidecar's identity (the app's default, or Entra.Application's), its
	// user name the identity's object ID (the token's oid). Requires TLS
	// unless Redis is on a loopback address; excludes username and
	// password. Default: none.
	Entra *RedisEntra `json:"entra,omitempty"`
}

// RedisEntra is Redis with Entra ID authentication.
type RedisEntra struct {
	// Application names the application whose identity gets the Redis
	// tokens. Default: the app's default identity.
	Application string `json:"application,omitempty"`
	// MaxConnectionAge retires each Redis connection this old (and renews
	// the subscription as often), so that none outlives its token: a token
	// given to a new connection has at least twice this left. Default 10m.
	MaxConnectionAge caddy.Duration `json:"max_connection_age,omitempty"`
}

// Application is one application name: the scopes its tokens carry and,
// optionally, its own identity, overriding the app's default field by field.
// A credential is inherited only together with the client ID.
type Application struct {
	// Scopes are requested for the application's tokens, e.g.
	// https://graph.microsoft.com/.default. At least one is required.
	Scopes []string `json:"scopes,omitempty"`

	// Prefetch overrides the app's prefetch for this application. Default:
	// the app's.
	Prefetch *bool `json:"prefetch,omitempty"`

	// ClientCapabilities override the app's client_capabilities for this
	// application. Default: the app's.
	ClientCapabilities []string `json:"client_capabilities,omitempty"`

	// OnBehalfOf, when set, makes this an on-behalf-of application:
	// entra_token exchanges the user's token each request carries for a
	// token to Scopes on the user's behalf, instead of injecting the
	// application's own token. Default: nil, the application's own
	// (client-credentials) tokens.
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

// Provision sets up the app's logger and metrics, and warns about secrets
// written in the config itself.
func (a *App) Provision(ctx caddy.Context) error {
	a.ctx = ctx
	a.logger = ctx.Logger()
	a.refusals = new(refusalLog)
	if err := RegisterMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering metrics: %v", err)
	}
	a.warnLiteralSecrets()
	a.warnInsecurePlaintext()
	return nil
}

// warnInsecurePlaintext says, at load, what insecure_plaintext gives away.
func (a *App) warnInsecurePlaintext() {
	if a.Redis == nil || !a.Redis.InsecurePlaintext || len(a.Redis.EncryptionKeys) > 0 {
		return
	}
	a.logger.Warn("redis insecure_plaintext: tokens are shared through Redis unsealed; any Redis writer can replace " +
		"or withhold the tokens this sidecar injects (within the checks made of every record read), and any Redis " +
		"reader reads them; set encryption_key instead (head -c 32 /dev/urandom | base64)")
}

// Validate resolves and checks every setting (resolveSettings: placeholders,
// inherited identities, credentials, Redis), and only when all are valid
// makes the token clients and registers the applications with the pooled
// cache. Caddy validates right after provisioning, before any handler
// (which finds the app with ctx.App) and before any app starts; nothing here
// waits on the network.
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
	a.logger, a.refusals = logger, new(refusalLog)
	return a.provision(caddy.NewReplacer())
}

// Start activates this config's handles and makes the pooled cache (and
// go-redis) log through this config's logger. Only a config that is being committed starts: one that failed to
// load (and whose log writers Caddy then closes) never takes the cache's
// logger.
func (a *App) Start() error {
	a.cache.SetLogger(a.logger)
	if a.Redis != nil {
		redisstore.RouteLogs(a.logger.Named("redis"))
	}
	a.activate()
	a.startOperations()
	a.warnCertificateBoundRoutes(a.ctx)
	return nil
}

// activate lets this config's handles take their keys' refreshes over:
// until it starts, a config (which may still fail to load) never has a
// token requested with its credential while a running config shares the
// key.
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

// Cleanup releases this config's handles and its hold on the pooled cache;
// the last config to let go of a cache closes it (and its Redis client).
// On a reload Caddy cleans the old config up while its last requests are
// still being served: a released handle still answers them, with a token
// (refreshed with the newest started config's credential) or, once its cache is
// closed, a retryable 503.
func (a *App) Cleanup() error {
	a.stopOperations()
	a.closeExchangers()
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

// Token returns a token record for the named application, from the cache or
// freshly requested. It is the Go counterpart of the Node library
// better-auth-client-credential's getClientCredentialToken and what the
// entra_token handler calls.
func (a *App) Token(ctx context.Context, applicationName string) (tokencache.Record, error) {
	if e := a.exchangers[applicationName]; e != nil {
		return tokencache.Record{}, userTokenMissing(fmt.Sprintf("application %q exchanges users' tokens (on_behalf_of): "+
			"it has no token of its own", applicationName))
	}
	h, ok := a.handle(applicationName)
	if !ok {
		return tokencache.Record{}, &answerError{Answer{Status: http.StatusNotFound, Code: CodeApplicationNotFound,
			Message: fmt.Sprintf("application %q is not configured", applicationName)}}
	}
	return h.Token(ctx)
}

// handle returns the current handle of the named application.
func (a *App) handle(name string) (*tokencache.Handle, bool) {
	ah, ok := a.handles[name]
	if !ok {
		return nil, false
	}
	return ah.Load(), true
}

// PurgeRejected drops accessToken, which downstream refused, from the
// cache if it is still applicationName's current token, reporting whether
// it did.
func (a *App) PurgeRejected(ctx context.Context, applicationName, accessToken string) bool {
	h, ok := a.handle(applicationName)
	return ok && h.PurgeRejected(ctx, accessToken)
}

// LastFailure is the failure state of applicationName's token requests
// (nil when the last one succeeded, or the name is not configured).
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

// configuredNames lists the configured names for error messages.
func (a *App) configuredNames() string { return strings.Join(a.ApplicationNames(), ", ") }

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.Validator    = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)

// DeclaresCapabilities reports whether applicationName's token requests
// declare client capabilities (client_capabilities, e.g. cp1): its tokens
// may then be revoked by a claims challenge from downstream (continuous
// access evaluation), which RefreshForClaims answers.
func (a *App) DeclaresCapabilities(applicationName string) bool {
	for _, ra := range a.resolved {
		if ra.Name == applicationName {
			return len(ra.Config.ClientCapabilities) > 0 && ra.OnBehalfOf == nil
		}
	}
	return false
}

// RefreshForClaims replaces applicationName's token, which downstream
// answered with a claims challenge (challenge: the claims JSON), by one
// requested with those claims: one token request for the fleet, written
// to the store and announced, as a forced refresh is (calls within a
// second share it). It returns the new record; errors are as Token's.
func (a *App) RefreshForClaims(ctx context.Context, applicationName, challenge string) (tokencache.Record, error) {
	h, ok := a.handle(applicationName)
	if !ok {
		return tokencache.Record{}, &answerError{Answer{Status: http.StatusNotFound, Code: CodeApplicationNotFound,
			Message: fmt.Sprintf("application %q is not configured", applicationName)}}
	}
	return h.Refresh(entra.WithClaimsChallenge(ctx, challenge))
}
