package tokencache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"time"

	"go.uber.org/zap"
)

// NewOwner returns a random lock owner token for a Store's TryLock: 16
// bytes from crypto/rand, hex-encoded.
func NewOwner() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (it crashes the program instead)
	return hex.EncodeToString(b)
}

// keepLock extends the refresh lock every LockTTL/3 until stop, or until
// the lock turns out to be lost.
func (c *Cache) keepLock(h *Handle, owner string) (stop func()) {
	return c.extendLock(h.ks.key, h.ks.lockKey, owner, c.lockTTL,
		"refresh lock lost during a slow token request; another replica may fetch too", h.app.Name)
}

// extendLock resets lockKey (key's lock) to ttl every ttl/3 until stop, or
// until the lock turns out to be lost (logged as lost, for application name).
// Each try gets ttl/3, and the next begins ttl/3 after the one before began
// (at once when that one timed out), so a try that timed out leaves the next
// its whole time before the lock lapses.
func (c *Cache) extendLock(key, lockKey, owner string, ttl time.Duration, lost, name string) (stop func()) {
	interval := ttl / 3
	var mu sync.Mutex
	stopped := false
	var timer Timer
	var extend func()
	extend = func() {
		mu.Lock()
		if stopped {
			mu.Unlock()
			return
		}
		mu.Unlock()
		began := c.clock.Now()
		ctx, cancel := context.WithTimeout(c.closing, interval)
		extended, err := c.store.ExtendLock(ctx, lockKey, owner, ttl)
		cancel()
		defer hook(c.hooks.onLockExtended, key, extended && err == nil)
		if err != nil {
			c.storeFailed(err) // keep trying: the store may come back in time
		}
		mu.Lock()
		defer mu.Unlock()
		switch {
		case stopped: // released meanwhile: not lost
		case err == nil && !extended:
			c.log().Warn(lost, zap.String("application", name))
		default:
			timer = c.clock.AfterFunc(max(0, interval-c.clock.Now().Sub(began)), extend)
		}
	}
	mu.Lock()
	timer = c.clock.AfterFunc(interval, extend)
	mu.Unlock()
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		timer.Stop()
	}
}
