package tokencache

import (
	"context"
	"crypto/subtle"
	"errors"
	"time"

	"go.uber.org/zap"
)

// watch starts ks's lasting subscription, ended by Release of the last
// handle or Close: on each announcement it follows the store (see
// followStore) and wakes the key's waiters. The caller holds c.registerMu;
// the channel returned is closed once the subscription is confirmed (or
// the store gave up).
func (c *Cache) watch(ks *keyState) <-chan struct{} {
	subscribed := make(chan struct{})
	if !c.startBackground() {
		close(subscribed)
		return subscribed
	}
	ctx, cancel := context.WithCancel(c.closing)
	ks.stopWatch = cancel
	go c.runWatch(ctx, ks.key, ks.channel, subscribed, func(rec *Record) {
		c.followStore(ctx, ks, rec)
		ks.announce(rec)
	})
	return subscribed
}

// runWatch is a lasting watcher of channel, in a background slot the caller
// took: it closes subscribed once the store confirmed the subscription (or
// gave up), then calls onUpdate for each announcement until ctx ends.
func (c *Cache) runWatch(ctx context.Context, key, channel string, subscribed chan<- struct{}, onUpdate func(*Record)) {
	defer c.background.Done()
	updates, unsubscribe := c.store.Watch(ctx, key, channel)
	defer unsubscribe()
	close(subscribed)
	if updates == nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case rec := <-updates:
			onUpdate(rec)
		}
	}
}

// updated returns the key's broadcast: a channel closed at the key's next
// announcement, this process's own (Cache.publish) or another's.
func (ks *keyState) updated() <-chan struct{} {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.changed == nil {
		ks.changed = make(chan struct{})
	}
	return ks.changed
}

// announce wakes the key's waiters; rec is what the announcement carried.
func (ks *keyState) announce(rec *Record) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	ks.announced = rec
	if ks.changed != nil {
		close(ks.changed)
		ks.changed = nil
	}
}

// lastAnnounced returns the record the key's last announcement carried.
func (ks *keyState) lastAnnounced() *Record {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return ks.announced
}

// followStore brings a key in use here in line with the store after an
// announcement: it takes a newer record (announced, else read), and drops
// the current one when the store no longer has it, only if it was current
// before the read (a fetch writes the store before it fills L1). A key
// fetched without the store, an untrusted record or a store failure change
// nothing.
func (c *Cache) followStore(ctx context.Context, ks *keyState, announced *Record) {
	h := c.newestOf(ks)
	if h == nil || ks.unshared.Load() {
		return
	}
	seen := ks.currentRecord()
	if seen == nil && !c.warm(ks) {
		return // not in use here: tokens are taken on first use
	}
	rec := announced
	if rec == nil {
		var err error
		rec, err = c.store.Get(ctx, ks.key)
		switch {
		case err == ErrNotFound:
			c.dropGone(ctx, ks, seen)
			return
		case errors.Is(err, ErrNotFound):
			return // a record that does not decode: the next refresh replaces it
		case err != nil:
			c.storeFailed(err)
			return
		}
		c.storeRecovered()
	}
	cur := ks.currentRecord()
	if cur == nil && !c.warm(ks) {
		return // not in use here: tokens are taken on first use
	}
	if cur != nil && subtle.ConstantTimeCompare([]byte(cur.AccessToken), []byte(rec.AccessToken)) == 1 {
		if rec.UpdatedAt.After(cur.UpdatedAt) && c.trusted(h, rec) {
			c.rewritten(ks, cur, rec)
		}
		return // ours, or already taken
	}
	if cur != nil && rec.UpdatedAt.Before(cur.UpdatedAt) {
		// A Redis writer putting back an older record (sealed ones copy)
		// must not make every replica fetch. Not by expiry: Entra's token
		// lifetimes vary.
		return
	}
	if !rec.validFor(c.now(), c.refreshWindow) || c.isPurged(ks, rec) || !c.trusted(h, rec) {
		return
	}
	c.took(ks, rec)
	c.schedule(ks)
	c.log().Info("took a newer access token announced by another replica",
		zap.String("application", h.app.Name), zap.String("record_key", ks.key), zap.Time("expires_at", rec.AccessTokenExpiresAt))
}

// rewritten makes rec, cur's token written to the store again later (a
// managed identity's endpoint hands out the token it cached), ks's current
// record if cur still is, keeping when it is due and where it came from: a
// purge mark naming cur's record names the token no longer.
func (c *Cache) rewritten(ks *keyState, cur, rec *Record) {
	c.registerMu.Lock()
	defer c.registerMu.Unlock()
	ks.mu.Lock()
	if ks.current != cur {
		ks.mu.Unlock()
		return
	}
	ks.current, ks.inStore = rec, true
	ks.mu.Unlock()
	for _, other := range ks.handles {
		other.l1.Store(other.view(rec))
	}
}

// dropGone drops seen, ks's shared current record when the store was read,
// from L1 now that the store lost it (another replica purged it); a key
// kept warm fetches at once. A valid token is dropped only when the
// store's purge mark names it (see markPurged: a Redis flush, or a writer
// without the key, deletes no valid token here) and at most once per
// PurgeInterval (see allowRefetch). OnStoreDrop is told either way.
func (c *Cache) dropGone(ctx context.Context, ks *keyState, seen *Record) {
	marked := seen != nil && c.purgeMarked(ctx, ks, seen)
	c.registerMu.Lock()
	ks.mu.Lock()
	cur := ks.current
	if cur == nil || cur != seen || !ks.inStore {
		ks.mu.Unlock()
		c.registerMu.Unlock()
		return
	}
	var app *Application
	name := ""
	if len(ks.handles) > 0 {
		app = &ks.handles[len(ks.handles)-1].app
		name = app.Name
	}
	if now := c.now(); cur.validFor(now, c.refreshWindow) {
		kept := ""
		switch {
		case !marked:
			kept = "no purge mark names it"
		case !c.allowRefetch(ks, now):
			kept = "dropped one too recently"
		}
		if kept != "" {
			ks.mu.Unlock()
			c.registerMu.Unlock()
			c.reportStoreDrop(app, ks.key, kept)
			return
		}
	}
	if marked {
		ks.rememberDropped(cur, c.now()) // an old copy of its record put back is not taken
	}
	ks.clearCurrent()
	ks.mu.Unlock()
	c.registerMu.Unlock()
	c.reportStoreDrop(app, ks.key, "")
	c.log().Info("dropped an access token purged by another replica; the next request fetches a new one",
		zap.String("application", name), zap.String("record_key", ks.key))
	if c.warm(ks) {
		c.backgroundRefresh(ks, nil)
	}
}

// allowRefetch takes ks's turn to drop a valid token, if due: one drop per
// PurgeInterval, from a 401 or the store alike, so that neither a
// downstream nor a Redis writer can drive token requests faster. The
// caller holds ks.mu.
func (c *Cache) allowRefetch(ks *keyState, now time.Time) bool {
	if !ks.lastPurge.IsZero() && now.Sub(ks.lastPurge) < c.purgeInterval {
		return false
	}
	ks.lastPurge = now
	return true
}

// reportStoreDrop tells app's OnStoreDrop whether a drop the store asked
// for was made (kept says why not, else empty); a refused one is logged at
// debug level (a Redis writer can ask often).
func (c *Cache) reportStoreDrop(app *Application, key, kept string) {
	if app == nil {
		return
	}
	if kept != "" {
		if ce := c.log().Check(zap.DebugLevel, "kept an access token the store no longer holds: "+kept); ce != nil {
			ce.Write(zap.String("application", app.Name), zap.String("record_key", key), zap.Duration("interval", c.purgeInterval))
		}
	}
	if app.OnStoreDrop != nil {
		app.OnStoreDrop(kept == "")
	}
}
