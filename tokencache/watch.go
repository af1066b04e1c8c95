package tokencache

import (
	"context"
	"crypto/subtle"
	"errors"

	"go.uber.org/zap"
)

// watch starts ks's lasting subscription to its update channel, for as
// long as the key has handles (Release of the last one, or Close, ends
// it): on each announcement this process wakes the key's waiters (see
// updated), reads the store, takes a newer record into L1 at once (a forced
// refresh on another replica), and drops its own when the record is gone (a
// purge on another replica), so every replica sharing the store follows
// within the pub/sub latency. The
// caller holds c.registerMu; the returned channel is closed once the
// subscription is confirmed (or the store gave up within its timeout), so
// that Register, after releasing the lock, returns only when announcements
// reach the key.
//
// A store no other process shares (Store.Watch returns nil) is not
// watched.
func (c *Cache) watch(ks *keyState) <-chan struct{} {
	subscribed := make(chan struct{})
	if !c.startBackground() {
		close(subscribed)
		return subscribed
	}
	ctx, cancel := context.WithCancel(c.closing)
	ks.stopWatch = cancel
	go func() {
		defer c.background.Done()
		updates, unsubscribe := c.store.Watch(ctx, ks.key, ks.channel)
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
				c.followStore(ctx, ks, rec)
				ks.announce(rec)
			}
		}
	}()
	return subscribed
}

// updated returns the key's broadcast: a channel closed at the key's next
// announcement, this process's own (Cache.publish) or another's (the
// lasting subscription). A refresh takes it before trying the lock.
func (ks *keyState) updated() <-chan struct{} {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.changed == nil {
		ks.changed = make(chan struct{})
	}
	return ks.changed
}

// announce wakes everyone waiting on the key's broadcast; rec is the record
// the announcement carried, nil for none (see lastAnnounced).
func (ks *keyState) announce(rec *Record) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	ks.announced = rec
	if ks.changed != nil {
		close(ks.changed)
		ks.changed = nil
	}
}

// lastAnnounced returns the record the key's last announcement carried, nil
// if it carried none: a waiter woken by it takes it without reading the
// store, after the checks a record read from the store passes.
func (ks *keyState) lastAnnounced() *Record {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return ks.announced
}

// followStore brings ks in line with the store after an announcement,
// for a key in use here: it takes a newer record (one written no earlier
// than the current one: the one the announcement carried, else read from
// the store), and drops the current one when the store no longer has it,
// only if it was current before the read: a fetch writes the store before
// it fills L1, so a record filled since may simply not have been written
// when the store was read. Nothing changes for a key fetched without the
// store (unshared, or fetched while the store was down), for a record that
// does not decode or is not trusted, or when the store fails.
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
			c.dropGone(ks, seen)
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
		return // ours, or already taken
	}
	if cur != nil && rec.UpdatedAt.Before(cur.UpdatedAt) {
		// Written before the current one: a Redis writer putting back an
		// earlier record (a sealed one too: copying needs no key) would
		// otherwise make every replica take a token past its refresh point
		// and fetch at once, once per put-back. (Not the expiry: Entra's
		// token lifetimes vary, so a newer token may expire sooner.)
		return
	}
	if !rec.validFor(c.now(), c.refreshWindow) || c.isPurged(ks, rec.AccessToken) || !c.trusted(h, rec) {
		return
	}
	c.took(ks, rec)
	c.schedule(ks)
	c.log().Info("took a newer access token announced by another replica",
		zap.String("application", h.app.Name), zap.String("record_key", ks.key), zap.Time("expires_at", rec.AccessTokenExpiresAt))
}

// dropGone drops ks's current record from L1 when the store no longer has
// it although it was shared (another replica purged it): the next Token
// gets a fresh one. Only seen, the record current when the store was read,
// is dropped: one taken since (a fetch that wrote the store after that read)
// is not the purged one. A key kept warm fetches at once. A still-valid
// token is dropped at most once per PurgeInterval (shared with
// PurgeRejected, see allowRefetch): within it, it is kept until its own refresh or the next
// announcement after the interval. Application.OnStoreDrop is told either
// way.
func (c *Cache) dropGone(ks *keyState, seen *Record) {
	c.registerMu.Lock()
	ks.mu.Lock()
	cur := ks.current
	if cur == nil || cur != seen || !ks.inStore {
		ks.mu.Unlock()
		c.registerMu.Unlock()
		return
	}
	var app *Application
	if len(ks.handles) > 0 {
		app = &ks.handles[len(ks.handles)-1].app
	}
	if now := c.now(); cur.validFor(now, c.refreshWindow) && !c.allowRefetch(ks, now) {
		ks.mu.Unlock()
		c.registerMu.Unlock()
		if app != nil {
			c.reportStoreDrop(app, ks.key, false)
		}
		return
	}
	ks.clearCurrent()
	ks.mu.Unlock()
	for _, h := range ks.handles {
		h.l1.Store(nil)
	}
	c.registerMu.Unlock()
	name := ""
	if app != nil {
		name = app.Name
		c.reportStoreDrop(app, ks.key, true)
	}
	c.log().Info("dropped an access token purged by another replica; the next request fetches a new one",
		zap.String("application", name), zap.String("record_key", ks.key))
	if c.warm(ks) {
		c.backgroundRefresh(ks, nil)
	}
}
