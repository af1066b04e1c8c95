package entraapp

import (
	"sync"
	"sync/atomic"
	"weak"

	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/binding"
	"github.com/caddy-entra/caddy-entra/entra"
	"github.com/caddy-entra/caddy-entra/tokencache"
)

// lifecycleGuard orders rekeys with commit and Cleanup: after Cleanup no
// handle is registered again; one registered before commit is activated by
// it. It also keeps what undoes a commit (stopOperations).
type lifecycleGuard struct {
	mu        sync.Mutex
	cleanedUp bool
	started   bool
	replaced  weak.Pointer[App] // the running app this one replaced when it committed
	stopped   atomic.Bool       // Stop or Cleanup ran
}

// rekey replaces app's handle by one under its learned identity's key and
// releases the old one (its requests in flight still get their answer).
func (a *App) rekey(app tokencache.Application, client *entra.Client) {
	a.lifecycle.mu.Lock()
	defer a.lifecycle.mu.Unlock()
	ah := a.handles[app.Name]
	if a.lifecycle.cleanedUp || ah == nil {
		return
	}
	app.CacheKey, _ = binding.CacheKey(client)
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
	ah.Swap(h).Release()
	if a.prefetches(app.Name) {
		h.Prefetch()
	}
	a.logger.Info("system-assigned managed identity learned from its first token: its records are now shared "+
		"with the replicas of that identity only", zap.String("application", app.Name))
}
