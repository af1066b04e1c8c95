package caddymodule

import (
	"crypto/rand"
	"encoding/hex"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/tokencache"
)

// A system-assigned managed identity is named nowhere in the config: every
// host's has the same entra.Client.CacheKey, so two hosts (two App Service
// apps, two VMs) sharing one Redis and key_prefix would share one record
// key and could inject each other's tokens. Its records are keyed by the
// identity its own tokens carry (tid and appid, learned from this process's
// first token): until then the application's record key is this process's
// own, and once learned the application is registered again under the
// identity's key, shared with every replica of that same identity only.

// processRecordNonce keeps an unlearned system-assigned identity's record
// key apart from every other process's.
var processRecordNonce = func() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}()

// appHandle is an application's handle in the pooled cache; a system-assigned
// identity's is replaced once its identity is learned.
type appHandle struct {
	current atomic.Pointer[tokencache.Handle]
}

func newAppHandle(h *tokencache.Handle) *appHandle {
	ah := new(appHandle)
	ah.current.Store(h)
	return ah
}

// cacheKeyOf is the tokencache.Application.CacheKey of client's tokens,
// and whether it still has to be learned (see the top of this file).
func cacheKeyOf(client *entra.Client, tokenIdentity *entra.TokenIdentity) (string, bool) {
	base := client.CacheKey()
	if !client.SystemAssigned() {
		return base, false
	}
	// Learn takes only a token that names both; the check keeps a record
	// key from ever having an empty part, the same for every such host.
	if tenantID, clientID, ok := tokenIdentity.Learned(); ok && tenantID != "" && clientID != "" {
		return base + "\nidentity=" + tenantID + "/" + clientID, false
	}
	return base + "\nprocess=" + processRecordNonce, true
}

// lifecycleGuard is where the app is in its life (started, cleaned up),
// under the lock that orders rekeys with Start and Cleanup: after Cleanup
// no handle is registered again, and one registered before Start is
// activated by it.
type lifecycleGuard struct {
	mu        sync.Mutex
	cleanedUp bool
	started   bool // the app started: handles are registered active
}

// rekeyer registers an application again under its learned identity's
// record key, once. It runs after the fetch that taught it, never inside it.
type rekeyer struct {
	once sync.Once
	// unlearnable says once that the identity's tokens cannot key it.
	unlearnable sync.Once
	a           *App
	app         tokencache.Application
	// client and tokenIdentity recompute the cache key once learned.
	client        *entra.Client
	tokenIdentity *entra.TokenIdentity
}

// learned is called after each successful fetch of the application, with
// why its token taught nothing (nil if it did). An identity whose tokens do
// not name its tenant and client (an IMDS-compatible endpoint that leaves
// the client claim out) keeps its per-process record key: it shares no
// token with any other process, as it cannot tell another host's apart.
func (r *rekeyer) learned(learnErr error) {
	if _, unlearned := cacheKeyOf(r.client, r.tokenIdentity); unlearned {
		if learnErr != nil {
			r.unlearnable.Do(func() {
				r.a.logger.Warn("the system-assigned managed identity's tokens do not name its tenant and client: "+
					"its tokens are fetched by this process alone and never shared through the token store",
					zap.String("application", r.app.Name), zap.Error(learnErr))
			})
		}
		return
	}
	r.once.Do(func() { go r.a.rekey(r) })
}

// rekey replaces the handle of r's application by one under its learned
// identity's record key and releases the old one (whose requests in flight
// still get their answer).
func (a *App) rekey(r *rekeyer) {
	a.lifecycle.mu.Lock()
	defer a.lifecycle.mu.Unlock()
	ah := a.handles[r.app.Name]
	if a.lifecycle.cleanedUp || ah == nil {
		return
	}
	app := r.app
	app.CacheKey, _ = cacheKeyOf(r.client, r.tokenIdentity)
	register := a.cache.RegisterPending
	if a.lifecycle.started {
		register = a.cache.Register
	}
	h, err := register(app)
	if err != nil {
		a.logger.Error("keying a system-assigned identity's records by its learned identity",
			zap.String("application", app.Name), zap.Error(err))
		return
	}
	ah.current.Swap(h).Release()
	if a.prefetches(app.Name) {
		h.Prefetch() // keep it warm under its new key too
	}
	a.logger.Info("system-assigned managed identity learned from its first token: its records are now shared "+
		"with the replicas of that identity only", zap.String("application", app.Name))
}
