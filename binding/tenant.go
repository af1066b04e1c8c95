package binding

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/entra"
)

// tenantResolutions holds the process's resolution of each tenant domain
// (by OpenID configuration URL), shared by the applications' own tokens,
// the on-behalf-of applications and reloads.
var tenantResolutions sync.Map // string -> *tenantResolution

// tenantResolution is one discovery URL's resolution; a failure is asked
// again after its backoff (retry), or after a longer Retry-After.
type tenantResolution struct {
	tenantID atomic.Pointer[string] // set once resolved, for good

	mu sync.Mutex
	retry
}

// ResolveTenant returns the ID of the tenant client names by domain name
// (entra.Client.ResolveTenantID), resolved once per process and discovery
// URL: concurrent callers share one request; after a failure, callers get
// it without a request, with how long until the next caller asks again.
// ctx bounds the caller's wait, not the request (the client's timeout
// does). Each failed attempt is logged to logger (a warning, at most one
// per backoff), and the success that ends a run of failures (info).
// entra.ErrNoTenantToResolve when the tenant has no name to resolve.
func ResolveTenant(ctx context.Context, client *entra.Client, logger *zap.Logger) (tenantID string, retryAfter time.Duration, err error) {
	discoveryURL := client.TenantDiscoveryURL()
	if discoveryURL == "" {
		return "", 0, entra.ErrNoTenantToResolve
	}
	v, _ := tenantResolutions.LoadOrStore(discoveryURL, new(tenantResolution))
	return v.(*tenantResolution).resolve(ctx, client, logger)
}

func (r *tenantResolution) resolve(ctx context.Context, client *entra.Client, logger *zap.Logger) (string, time.Duration, error) {
	if id := r.tenantID.Load(); id != nil {
		return *id, 0, nil
	}
	r.mu.Lock()
	running := r.start(func(done chan struct{}) { r.run(client, done, logger) })
	err, wait, _ := r.waiting()
	r.mu.Unlock()
	if running == nil {
		return "", wait, err
	}
	select {
	case <-running:
	case <-ctx.Done():
		return "", retryFirst, ctx.Err()
	}
	if id := r.tenantID.Load(); id != nil {
		return *id, 0, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return "", max(r.retryAt.Sub(now()), 0), r.err
}

// run asks the tenant's OpenID configuration, logs the outcome to logger
// and closes done.
func (r *tenantResolution) run(client *entra.Client, done chan struct{}, logger *zap.Logger) {
	tenantID, err := client.ResolveTenantID(context.Background())
	r.mu.Lock()
	var failedBefore int
	if err == nil {
		r.tenantID.Store(&tenantID)
		failedBefore = r.succeed()
	} else {
		var answered *entra.DiscoveryError
		var hint time.Duration
		if errors.As(err, &answered) {
			hint = answered.RetryAfter
		}
		r.fail(err, hint)
	}
	failed, retryIn := r.failed, r.wait
	r.mu.Unlock()
	defer close(done) // after the log: a caller that saw the outcome finds it logged
	discovery := zap.String("discovery_url", client.TenantDiscoveryURL())
	switch {
	case err != nil:
		// Discovery is unauthenticated: its error carries no secret.
		logger.Warn("resolving the tenant's ID from its OpenID configuration failed; until it succeeds, "+
			"on-behalf-of requests are answered 503 and records read from an unsealed store are trusted only after this replica's own token",
			discovery, zap.Int("attempts", failed), zap.Duration("retry_in", retryIn), zap.Error(err))
	case failedBefore > 0:
		logger.Info("resolved the tenant's ID from its OpenID configuration", discovery, zap.Int("failed_attempts", failedBefore))
	}
}

// tenantResolver returns, for a tenant given by domain name (else nil),
// what resolves it before an unsealed record is checked; without it a
// replica would trust the store only after a token request of its own.
// While the resolution fails, the tenant may still be learned from the
// replica's first token.
func tenantResolver(client *entra.Client, tokenIdentity *entra.TokenIdentity, logger *zap.Logger) func() {
	if client.TenantDiscoveryURL() == "" {
		return nil
	}
	var failed atomic.Bool
	return func() {
		if _, _, learned := tokenIdentity.Learned(); learned {
			return
		}
		// Until an attempt has failed, checks wait for the resolution (at
		// most the client's timeout), as they always did; after that they
		// only start the next attempt once its backoff has passed and do not
		// wait: a record read or an announcement is never held up again by
		// a slow or failing authority.
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if failed.Load() {
			cancel()
		}
		tenantID, _, err := ResolveTenant(ctx, client, logger)
		if err != nil {
			failed.Store(true)
			return
		}
		_ = tokenIdentity.LearnTenant(tenantID)
	}
}
