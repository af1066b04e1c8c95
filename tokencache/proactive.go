package tokencache

import (
	"time"

	"go.uber.org/zap"
)

// maxRefreshJitter bounds the random shift of a background refresh.
const maxRefreshJitter = 5 * time.Minute

// schedule arms ks's background refresh at its record's refresh point
// (RefreshIn, else RefreshAhead) with jitter, before RefreshWindow and not
// before a running backoff ends. Without a usable record only a key kept
// warm is retried, at least prefetchRetryInterval later.
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

// refreshPoint is when rec is due by RefreshAhead: that fraction of its
// lifetime after UpdatedAt.
func refreshPoint(rec *Record, ahead float64) time.Time {
	lifetime := rec.AccessTokenExpiresAt.Sub(rec.UpdatedAt)
	if rec.UpdatedAt.IsZero() || lifetime <= 0 {
		return rec.AccessTokenExpiresAt
	}
	return rec.UpdatedAt.Add(time.Duration(ahead * float64(lifetime)))
}

// refreshDelay is the time until min(at, deadline), moved by up to ±10% of
// itself (at most ±5 minutes) as random in [0, 1) picks, never past deadline.
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

// backgroundRefresh runs a refresh of ks that no caller waits for, unless
// the Cache is closing or no handle is left; any valid record newer than
// due (nil for none) will do.
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
