package caddymodule

import (
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/tokencache"
)

// retireGrace is how long a cleaned-up config keeps its registrations for
// the requests it is still serving, at the least. Caddy cleans an old config
// up as soon as a reload has started the new one, without waiting for the old
// one's requests.
var retireGrace = 10 * time.Second

// errConfigReplaced answers a request that reaches a config after it was
// retired: the client should simply try again (the new config serves it).
var errConfigReplaced = &tokencache.Error{
	Code:       tokencache.CodeTokenRequestFailed,
	Status:     http.StatusServiceUnavailable,
	Message:    "the sidecar configuration was replaced while this request was under way; retry it",
	RetryAfter: time.Second,
}

// lifecycle counts the calls a config has in flight on the pooled cache and
// releases the config's hold once it is retired and none is left.
type lifecycle struct {
	inFlight  atomic.Int64
	retiring  atomic.Bool // Cleanup has run
	graceOver atomic.Bool // and retireGrace has passed since
	released  atomic.Bool
	release   sync.Once
}

// enter records a call on the cache; false once the config's registrations
// are gone.
func (a *App) enter() bool {
	a.lifecycle.inFlight.Add(1)
	if a.lifecycle.released.Load() {
		a.leave()
		return false
	}
	return true
}

// leave ends a call begun by enter.
func (a *App) leave() {
	if a.lifecycle.inFlight.Add(-1) == 0 {
		a.releaseIfIdle()
	}
}

// retire starts the end of this config: after retireGrace, and once no call
// is in flight, its registrations and its pool reference are released.
func (a *App) retire() {
	if !a.lifecycle.retiring.CompareAndSwap(false, true) {
		return
	}
	time.AfterFunc(retireGrace, func() {
		a.lifecycle.graceOver.Store(true)
		a.releaseIfIdle()
	})
}

// releaseIfIdle releases the config's registrations and pool reference, once,
// when it is retired, its grace is over and no call is in flight.
func (a *App) releaseIfIdle() {
	l := a.lifecycle
	if !l.graceOver.Load() || l.inFlight.Load() != 0 {
		return
	}
	l.release.Do(func() {
		l.released.Store(true)
		for _, registered := range a.registered {
			a.cache.Unregister(registered)
		}
		if _, err := cachePool.Delete(a.poolKey); err != nil {
			a.logger.Error("releasing the token cache", zap.Error(err))
		}
	})
}
