package tokencache

import (
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
//
// A key kept warm (see Handle.Prefetch) is retried without a usable record
// too: when its backoff ends, and at least prefetchRetryInterval later.
func (c *Cache) schedule(ks *keyState) {
	warm := c.warm(ks)
	ks.mu.Lock()
	defer ks.mu.Unlock()
	ks.stopTimer()
	if ks.removed || c.isClosed() {
		return
	}
	now := c.now()
	cur := ks.current
	delay := max(ks.failure.Until.Sub(now), prefetchRetryInterval)
	if cur.validFor(now, c.refreshWindow) {
		at := ks.refreshAt
		if at.IsZero() {
			at = refreshPoint(cur, c.refreshAhead)
		}
		delay = max(refreshDelay(now, at, cur.AccessTokenExpiresAt.Add(-c.refreshWindow), c.random()), ks.failure.Until.Sub(now))
	} else if !warm {
		return
	}
	ks.nextRefresh = now.Add(delay)
	ks.timer = c.clock.AfterFunc(delay, func() { c.backgroundRefresh(ks, cur) })
}

// refreshPoint is when rec is due for a refresh by RefreshAhead: that
// fraction of its lifetime (UpdatedAt to expiry) after UpdatedAt.
func refreshPoint(rec *Record, ahead float64) time.Time {
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

// backgroundRefresh runs a refresh of ks that no caller waits for, by its
// newest live handle, unless the Cache is closing or no handle is left. due
// is the record it replaces (nil for none): any valid record newer than it
// will do, such as one another replica announced after the refresh was
// armed.
func (c *Cache) backgroundRefresh(ks *keyState, due *Record) {
	if !c.startBackground() {
		return
	}
	go func() {
		defer c.background.Done()
		h := c.newestOf(ks)
		if h == nil {
			return
		}
		res := <-c.startFlight(c.closing, h, true, due)
		if res.Err != nil {
			if ce := c.log().Check(zap.DebugLevel, "background token refresh failed; callers keep the current token"); ce != nil {
				ce.Write(zap.String("application", h.app.Name), zap.Error(res.Err))
			}
		}
		hook(c.hooks.afterBackground, ks.key, res.Err)
	}()
}
