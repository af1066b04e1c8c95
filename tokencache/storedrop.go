package tokencache

import (
	"time"

	"go.uber.org/zap"
)

// allowRefetch reports whether a still-valid token of ks may be dropped at
// now, making the next Token fetch again, and if so takes the key's turn:
// at most one such drop per PurgeInterval per key in this process, whether
// it comes from an upstream 401 (PurgeRejected) or from the store (a record
// deleted and announced, see dropGone), so that neither a downstream nor a
// Redis writer can drive token requests faster. The caller holds ks.mu.
func (c *Cache) allowRefetch(ks *keyState, now time.Time) bool {
	if !ks.lastPurge.IsZero() && now.Sub(ks.lastPurge) < c.purgeInterval {
		return false
	}
	ks.lastPurge = now
	return true
}

// reportStoreDrop tells app's OnStoreDrop, if any, whether a drop the store
// asked for was made, and logs one that was refused at debug level (a
// Redis writer can ask often).
func (c *Cache) reportStoreDrop(app *Application, key string, dropped bool) {
	if !dropped {
		if ce := c.log().Check(zap.DebugLevel, "kept an access token the store no longer holds: dropped one too recently"); ce != nil {
			ce.Write(zap.String("application", app.Name), zap.String("record_key", key), zap.Duration("interval", c.purgeInterval))
		}
	}
	if app.OnStoreDrop != nil {
		app.OnStoreDrop(dropped)
	}
}
