package tokencache

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"
)

// maxRefreshJitter bounds the random shift of a background refresh.
const maxRefreshJitter = 5 * time.Minute

// schedule arms ks's background refresh for its current record: at its
// refresh point (Fetched.RefreshIn after the fetch, else RefreshAhead of its
// lifetime) with jitter, never after it enters RefreshWindow, and not
// before a running backoff ends. Without a usable record there is nothing
// to keep fresh: the next Token refreshes on demand.
func (c *Cache) schedule(ks *keyState) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.timer != nil {
		ks.timer.Stop()
		ks.timer = nil
	}
	if ks.removed || c.isClosed() {
		return
	}
	now := c.now()
	cur := ks.current
	if !cur.validFor(now, c.refreshWindow) {
		return
	}
	deadline := cur.AccessTokenExpiresAt.Add(-c.refreshWindow)
	at := ks.refreshAt
	if at.IsZero() {
		at = refreshPoint(cur, c.refreshAhead)
	}
	delay := refreshDelay(now, at, deadline, c.random())
	if wait := ks.failure.Until.Sub(now); wait > delay {
		delay = wait
	}
	ks.timer = c.clock.AfterFunc(delay, func() { c.backgroundRefresh(ks) })
}

// refreshPoint is when rec is due for a refresh by RefreshAhead: that
// fraction of its lifetime (UpdatedAt to expiry) after UpdatedAt.
func refreshPoint(rec *ClientCredential, ahead float64) time.Time {
	lifetime := rec.AccessTokenExpiresAt.Sub(rec.UpdatedAt)
	if rec.UpdatedAt.IsZero() || lifetime <= 0 {
		return rec.AccessTokenExpiresAt
	}
	return rec.UpdatedAt.Add(time.Duration(ahead * float64(lifetime)))
}

// refreshDelay is how long from now to wait before refreshing a token due
// at `at` that is no longer usable from deadline: the time until
// min(at, deadline), moved by up to ±10% of itself (at most ±5 minutes, as
// random in [0, 1) picks), and never past deadline.
func refreshDelay(now, at, deadline time.Time, random float64) time.Duration {
	if at.After(deadline) {
		at = deadline
	}
	d := at.Sub(now)
	if d <= 0 {
		return 0
	}
	spread := min(d/10, maxRefreshJitter)
	jitter := time.Duration((2*random - 1) * float64(spread))
	if d+jitter > deadline.Sub(now) {
		jitter = -jitter
	}
	return d + jitter
}

// isClosed reports whether Close has begun.
func (c *Cache) isClosed() bool {
	c.bgMu.Lock()
	defer c.bgMu.Unlock()
	return c.closed
}

// backgroundRefresh runs a refresh of ks that no caller waits for, unless
// the Cache is closing.
func (c *Cache) backgroundRefresh(ks *keyState) {
	c.bgMu.Lock()
	if c.closed {
		c.bgMu.Unlock()
		return
	}
	c.background.Add(1)
	c.bgMu.Unlock()
	go func() {
		defer c.background.Done()
		e := c.anyEntry(ks)
		if e == nil {
			return
		}
		res := <-c.startFlight(c.closing, e, true)
		if res.Err != nil {
			if ce := c.log().Check(zap.DebugLevel, "background token refresh failed; callers keep the current token"); ce != nil {
				ce.Write(zap.String("application", e.app.label()), zap.Error(res.Err))
			}
		}
		if c.afterBackground != nil {
			c.afterBackground(ks.key, res.Err)
		}
	}()
}

// keepLock extends the refresh lock every LockTTL/3 until stop is called,
// so that a slow fetch keeps it while a holder that died loses it within
// LockTTL. It gives up when the lock turns out to be lost.
func (c *Cache) keepLock(e *entry, owner string) (stop func()) {
	ks := e.ks
	interval := c.lockTTL / 3
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
		ctx, cancel := context.WithTimeout(c.closing, interval)
		extended, err := c.store.ExtendLock(ctx, ks.lockKey, owner, c.lockTTL)
		cancel()
		if c.onLockExtended != nil {
			c.onLockExtended(ks.key, extended && err == nil)
		}
		switch {
		case err != nil:
			c.storeFailed(err) // keep trying: the store may come back in time
		case !extended:
			c.log().Warn("refresh lock lost during a slow token request; another replica may fetch too",
				zap.String("application", e.app.label()))
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			timer = c.clock.AfterFunc(interval, extend)
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
