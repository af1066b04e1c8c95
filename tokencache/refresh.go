package tokencache

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"strconv"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/singleflight"
)

var (
	errEmptyToken    = errors.New("tokencache: the token endpoint returned an empty access token")
	errTokenTooShort = errors.New("tokencache: the token endpoint returned a token that expires within the refresh window")
	errFetchPanicked = errors.New("tokencache: the fetch function panicked")
)

// In LockTTLs: the most a Fetch may take (the lock is extended meanwhile),
// and how long a lock loser waits before it fetches on its own (a live
// holder keeps the lock for a fetch and its last extension).
const (
	fetchTimeoutLockTTLs = 2
	loserWaitLockTTLs    = 3
)

// refresh gets a valid record for h when its L1 has none, joining the
// key's flight; the caller returns when its ctx ends or WaitTimeout passes.
func (c *Cache) refresh(ctx context.Context, h *Handle) (Record, error) {
	if rec := h.ks.currentRecord(); rec.validFor(c.now(), c.refreshWindow) {
		return *h.view(rec), nil // h was released: its L1 is no longer filled
	}
	if c.isClosed() {
		return Record{}, closedError(h)
	}
	left := func() (Record, error) {
		return Record{}, requestError(ctx.Err(), "waiting for a token for application %q: %v", h.app.Name, ctx.Err())
	}
	if ctx.Err() != nil { // the caller left: no token request for it
		return left()
	}
	if f := c.hooks.beforeFlight; f != nil {
		f(h.ks.key)
	}
	results := c.startFlight(ctx, h, false, nil)
	wait := time.NewTimer(c.waitTimeout)
	defer wait.Stop()
	select {
	case <-ctx.Done():
		return left()
	case <-wait.C:
		return Record{}, requestError(context.DeadlineExceeded,
			"no token for application %q within %s; still trying", h.app.Name, c.waitTimeout)
	case res := <-results:
		if res.Err != nil {
			return Record{}, requestFailed(h, res.Err)
		}
		return *h.view(res.Val.(*Record)), nil
	}
}

// startFlight joins or starts the refresh of h's key by its newest live
// handle (never one begun for an older handle). A background refresh looks
// for a record newer than due even while due is valid.
func (c *Cache) startFlight(ctx context.Context, h *Handle, background bool, due *Record) <-chan singleflight.Result {
	fetcher := c.newest(h)
	if background {
		ctx = context.WithValue(ctx, backgroundKey{}, true)
	}
	return h.ks.flights.DoChan(strconv.FormatUint(fetcher.seq, 10), func() (any, error) {
		return c.runFlight(ctx, fetcher, func(ctx context.Context) (*Record, error) {
			return c.load(ctx, fetcher, c.acceptorFor(fetcher.ks, background, due), false)
		})
	})
}

// runFlight runs body, a flight of h's key (a refresh or a forced one),
// detached from ctx's cancellation so that every caller joining it gets its
// result, bounded by the longest a refresh takes (a loser's wait, a fetch
// and an unlock) and cancelled by Close (closedError). It then schedules
// the key's next background refresh.
func (c *Cache) runFlight(ctx context.Context, h *Handle, body func(context.Context) (*Record, error)) (*Record, error) {
	flightCtx, cancel := c.flightContext(ctx)
	defer cancel()
	rec, err := body(flightCtx)
	c.schedule(h.ks)
	if err != nil && c.isClosed() {
		return nil, closedError(h)
	}
	return rec, err
}

// flightContext is ctx uncancelled, bounded by a flight's longest, ended by Close.
func (c *Cache) flightContext(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx),
		time.Duration(loserWaitLockTTLs+fetchTimeoutLockTTLs+1)*c.lockTTL)
	stop := context.AfterFunc(c.closing, cancel)
	return ctx, func() { stop(); cancel() }
}

// requestFailed wraps a refresh failure in an *Error, unless it is one.
func requestFailed(h *Handle, err error) *Error {
	var coded *Error
	if errors.As(err, &coded) {
		return coded
	}
	return requestError(err, "requesting a token for application %q: %v", h.app.Name, err)
}

// acceptor says whether a record found in L1 or the store will do.
type acceptor func(rec *Record) bool

// acceptorFor returns what a refresh of ks takes: a valid record not
// purged, newer than due for a background refresh.
func (c *Cache) acceptorFor(ks *keyState, background bool, due *Record) acceptor {
	cur := ks.currentRecord()
	if background {
		cur = due
	}
	return func(rec *Record) bool {
		if !rec.validFor(c.now(), c.refreshWindow) || c.isPurged(ks, rec) {
			return false
		}
		if background && cur.validFor(c.now(), c.refreshWindow) {
			return rec.AccessTokenExpiresAt.After(cur.AccessTokenExpiresAt)
		}
		return true
	}
}

// forcedAcceptor returns what a forced refresh of ks takes from a lock
// holder instead of its own fetch: a valid record not purged, holding
// another token than the current one and written no earlier (an older
// record put back is not a refresh).
func (c *Cache) forcedAcceptor(ks *keyState) acceptor {
	held := ks.currentRecord()
	return func(rec *Record) bool {
		return rec.validFor(c.now(), c.refreshWindow) && !c.isPurged(ks, rec) &&
			(held == nil || !rec.UpdatedAt.Before(held.UpdatedAt) &&
				subtle.ConstantTimeCompare([]byte(rec.AccessToken), []byte(held.AccessToken)) != 1)
	}
}

// load is the body of a refresh: the record in L1 or the store if accept
// takes it; an error at once while the key is backed off; else a fetch by
// the replica that takes the lock while the others wait for it. A store
// failure makes it fetch on its own. A forced refresh obeys the backoff
// first and takes a record only as a lock loser.
func (c *Cache) load(ctx context.Context, h *Handle, accept acceptor, forced bool) (*Record, error) {
	ks := h.ks
	existing := ks.currentRecord()
	// A refresh that ended just before this one began, or an announcement
	// taken since a background refresh was armed, may have filled L1.
	if !forced && accept(existing) {
		return existing, nil
	}
	if forced || ks.unshared.Load() {
		if b, cause, ok := ks.activeBackoff(c.now(), h.app.credentialID()); ok {
			return nil, c.refused(h, b, cause, forced)
		}
		if ks.unshared.Load() {
			return c.fetch(ctx, h, ks.currentRecord(), false)
		}
	}
	if !forced {
		rec, err := c.read(ctx, h)
		if err == nil && accept(rec) {
			c.took(ks, rec)
			return rec, nil
		}
		if b, cause, ok := ks.activeBackoff(c.now(), h.app.credentialID()); ok {
			return nil, c.backedOff(h, b, cause)
		}
		if err != nil {
			return c.fetch(ctx, h, nil, false)
		}
		existing = rec
	}
	// Listen before trying the lock, so that the winner's announcement
	// cannot fall between our losing and our listening.
	updates := ks.updated()
	lockedCtx, owner, release, err := c.tryLock(ctx, ks, updates)
	if err != nil {
		return c.fetch(ctx, h, existing, false)
	}
	if release != nil {
		defer release()
		return c.fetchLocked(lockedCtx, h, owner, accept, forced)
	}
	return c.await(ctx, h, existing, accept, forced, updates)
}

// tryLock takes a fetch slot, then tries ks's refresh lock: a replica
// claims a key only when it can fetch at once, so that a fleet's cold start
// spreads its requests over every replica. It gives up waiting for a slot
// when updates closes (a token may have come). With the lock, release
// frees the slot that lockedCtx carries to fetch; else release is nil.
func (c *Cache) tryLock(ctx context.Context, ks *keyState, updates <-chan struct{}) (lockedCtx context.Context, owner string, release func(), err error) {
	hook(c.hooks.beforeSlot, ks.key, len(c.fetchSlots.all) == cap(c.fetchSlots.all))
	release, woken, err := c.fetchSlots.acquireUnless(ctx, updates)
	if err != nil || woken {
		return nil, "", nil, err
	}
	owner, ok, err := c.store.TryLock(ctx, ks.lockKey, c.lockTTL)
	if err != nil {
		release()
		c.storeFailed(err)
		return nil, "", nil, err
	}
	c.storeRecovered()
	if !ok {
		release()
		return nil, "", nil, nil
	}
	return context.WithValue(ctx, slotKey{}, true), owner, release, nil
}

// fetchLocked runs under the refresh lock, extending it: it reads the store again
// (another replica may have written since our read), obeys the fleet's
// backoff, fetches if still needed, writes the record
// or backoff, unlocks and announces. A forced refresh takes no record here.
func (c *Cache) fetchLocked(ctx context.Context, h *Handle, owner string, accept acceptor, forced bool) (*Record, error) {
	ks := h.ks
	locked := true
	// Extended from its taking: the reads below spend the lock's time too.
	stopExtending := c.keepLock(h, owner)
	defer func() {
		if locked {
			stopExtending()
			c.unlock(ctx, h, owner)
		}
	}()
	if forced {
		if b, cause, ok := c.checkStoreBackoff(ctx, h); ok {
			return nil, c.refused(h, b, cause, true)
		}
	}
	existing, err := c.read(ctx, h)
	if !forced && err == nil {
		if accept(existing) {
			c.took(ks, existing)
			return existing, nil
		}
		if b, cause, ok := c.checkStoreBackoff(ctx, h); ok {
			return nil, c.backedOff(h, b, cause)
		}
	}
	if f := c.hooks.onFetchInProgress; f != nil {
		f(ks.key)
	}
	rec, fetchErr := c.fetch(ctx, h, existing, err == nil)
	stopExtending()
	c.unlock(ctx, h, owner)
	locked = false
	if err == nil { // after unlocking: a woken loser may take the lock at once
		c.publish(ctx, ks, ks.written(rec))
	}
	if forced && fetchErr == nil {
		c.log().Info("forced token refresh",
			zap.String("application", h.app.Name), zap.String("record_key", ks.key))
	}
	return rec, fetchErr
}

// await waits, as a lock loser, for the winner's announcement (or a poll),
// then takes the store's record if it will do, else (a forced refresh
// stops while the key is backed off) the lock if it is free. After
// loserWaitLockTTLs×LockTTL it fetches on its own.
func (c *Cache) await(ctx context.Context, h *Handle, existing *Record, accept acceptor, forced bool, updates <-chan struct{}) (*Record, error) {
	ks := h.ks
	giveUp := time.NewTimer(loserWaitLockTTLs * c.lockTTL)
	defer giveUp.Stop()
	interval := c.pollInterval
	poll := time.NewTimer(interval)
	defer poll.Stop()
	for {
		notified := false
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-giveUp.C:
			c.log().Warn("no token from the replica holding the refresh lock; fetching one",
				zap.String("application", h.app.Name), zap.Duration("waited", loserWaitLockTTLs*c.lockTTL))
			rec, err := c.fetch(ctx, h, existing, true)
			c.publish(ctx, ks, ks.written(rec))
			return rec, err
		case <-poll.C:
			// Doubling, so a fleet's losers of a thousand locks do not read
			// every key four times a second.
			interval = min(2*interval, max(c.lockTTL/3, c.pollInterval))
			poll.Reset(interval)
		case <-updates:
			notified = true
		}
		hook(c.hooks.onAwaitWake, ks.key, notified)
		updates = ks.updated() // before reading, as above
		if rec := ks.lastAnnounced(); rec != nil && c.trusted(h, rec) && accept(rec) {
			c.took(ks, rec) // the announcement carried it: no read
			return rec, nil
		}
		rec, err := c.read(ctx, h)
		if err != nil {
			return c.fetch(ctx, h, existing, false)
		}
		if accept(rec) {
			c.took(ks, rec)
			return rec, nil
		}
		if rec != nil {
			existing = rec
		}
		if forced {
			if b, cause, ok := ks.activeBackoff(c.now(), h.app.credentialID()); ok {
				return nil, c.refused(h, b, cause, true)
			}
		}
		lockedCtx, owner, release, err := c.tryLock(ctx, ks, updates)
		if err != nil {
			return c.fetch(ctx, h, existing, false)
		}
		if release != nil {
			defer release()
			return c.fetchLocked(lockedCtx, h, owner, accept, forced)
		}
	}
}

// read returns the store's record for h, nil if there is none usable, or
// the store's error.
func (c *Cache) read(ctx context.Context, h *Handle) (*Record, error) {
	rec, err := c.store.Get(ctx, h.ks.key)
	switch {
	case err == nil:
		c.storeRecovered()
		if !c.trusted(h, rec) {
			return nil, nil
		}
		h.ks.undecodable.Store(false)
		return rec, nil
	case errors.Is(err, ErrNotFound):
		c.storeRecovered()
		if err != ErrNotFound { // wrapped: there is a record, and it does not decode
			msg := "discarding a token record that does not decode"
			if errors.Is(err, ErrTooLarge) {
				msg = "discarding a token record larger than any replica writes (possible tampering)"
			}
			// Repeats at debug: each announcement (a Redis writer's too)
			// wakes a waiting replica to read the record again.
			level := zapcore.WarnLevel
			if h.ks.undecodable.Swap(true) {
				level = zapcore.DebugLevel
			}
			c.log().Log(level, msg, zap.String("application", h.app.Name), zap.Error(err))
		}
		return nil, nil
	default:
		c.storeFailed(err)
		return nil, err
	}
}

// fetch calls the Fetch of the newest live handle of h's key, checks the
// token and reports to OnFetch. On success it writes the record (CreatedAt
// from existing) to the store if write, ends any backoff and fills L1; on
// failure it starts or lengthens the backoff (in the store too if write),
// unless ctx is a TryRefresh's.
func (c *Cache) fetch(ctx context.Context, h *Handle, existing *Record, write bool) (*Record, error) {
	h = c.newest(h)
	ks := h.ks
	if ctx.Value(slotKey{}) == nil { // else the caller holds one
		release, err := c.fetchSlots.acquire(ctx)
		if err != nil {
			return nil, err
		}
		defer release()
	}
	// The credential as sent: one rotated while the request is out is not
	// the one its failure binds.
	credentialID := h.app.credentialID()
	start := time.Now()
	fetched, err := c.callFetch(ctx, h.app.Fetch, "token fetch function panicked", h.app.Name)
	took := time.Since(start)
	now := c.now()
	expiresAt := fetched.ExpiresAt.UTC().Truncate(time.Millisecond)
	if err == nil {
		err = c.checkFetched(fetched.AccessToken, expiresAt, now)
	}
	h.report(err, took)
	if err != nil && ctx.Err() != nil {
		return nil, err // our own cancellation: no backoff
	} else if err != nil && tried(ctx) && isPermanent(err) {
		return nil, c.triedFailed(h, err) // refused for what the caller asked: theirs alone
	} else if err != nil {
		return nil, c.recordFailure(ctx, h, err, credentialID, write)
	}
	stamp := now.UTC().Truncate(time.Millisecond)
	rec := &Record{ID: ks.key, ApplicationName: h.app.Name, AccessToken: fetched.AccessToken,
		AccessTokenExpiresAt: expiresAt, Scope: h.scope, CreatedAt: stamp, UpdatedAt: stamp}
	if existing != nil && !existing.CreatedAt.IsZero() {
		rec.CreatedAt = existing.CreatedAt
	}
	hadFailures := ks.clearBackoff()
	if !c.ownToken(h, rec, now) || !c.shareable(h, rec) {
		write = false
	}
	expiresAt = rec.AccessTokenExpiresAt
	shared := false
	if write {
		rec.UpdatedAt = c.stampPastWrites(ctx, ks, rec, existing, now)
		if err := c.store.Set(ctx, ks.key, rec, expiresAt.Sub(now)); errors.Is(err, ErrTooLarge) {
			write = false
			c.log().Warn("not sharing a token record larger than other replicas read",
				zap.String("application", h.app.Name), zap.Error(err))
		} else if err != nil {
			c.storeFailed(err)
		} else {
			shared = true
			ks.undecodable.Store(false)
			c.storeRecovered()
			if hadFailures {
				if err := c.store.DeleteBackoff(ctx, ks.backoffKey); err != nil {
					c.storeFailed(err)
				}
			}
		}
	}
	var refreshAt time.Time
	if fetched.RefreshIn > 0 {
		refreshAt = now.Add(fetched.RefreshIn)
	}
	c.fill(ks, rec, refreshAt, SourceFetched, shared)
	c.log().Info("fetched access token",
		zap.String("application", h.app.Name), zap.String("record_key", ks.key), zap.Time("expires_at", expiresAt),
		zap.Bool("shared", write && !c.inMemory))
	return rec, nil
}

// callFetch calls fetch for application name, for at most
// fetchTimeoutLockTTLs×LockTTL, turning a panic (which would end the
// process in a flight's goroutine) into an error, logged as msg.
func (c *Cache) callFetch(ctx context.Context, fetch FetchFunc, msg, name string) (fetched Fetched, err error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeoutLockTTLs*c.lockTTL)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			c.log().Error(msg, zap.String("application", name), zap.Stack("stack"))
			err = fmt.Errorf("%w (application %q)", errFetchPanicked, name)
		}
	}()
	return fetch(ctx)
}

// checkFetched refuses an empty token or one expiring within RefreshWindow.
func (c *Cache) checkFetched(token string, expiresAt, now time.Time) error {
	if token == "" {
		return errEmptyToken
	}
	if left := expiresAt.Sub(now); left <= c.refreshWindow {
		return fmt.Errorf("%w (%s left, window %s)", errTokenTooShort, left.Round(time.Second), c.refreshWindow)
	}
	return nil
}

// unlock releases the refresh lock, even if ctx has ended.
func (c *Cache) unlock(ctx context.Context, h *Handle, owner string) {
	if released, err := c.releaseLock(ctx, h.ks.lockKey, owner, 1); err == nil && !released {
		c.log().Warn("refresh lock expired before it was released; another replica may have fetched too",
			zap.String("application", h.app.Name), zap.Duration("lock_ttl", c.lockTTL))
	}
}

// releaseLock sends Unlock of lockKey held by owner, even if ctx has
// ended, up to attempts times while the store fails.
func (c *Cache) releaseLock(ctx context.Context, lockKey, owner string, attempts int) (released bool, err error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.lockTTL)
	defer cancel()
	for range attempts {
		if released, err = c.store.Unlock(ctx, lockKey, owner); err == nil {
			return released, nil
		}
	}
	c.storeFailed(err)
	return false, err
}

// publish announces that ks's record or backoff changed, here and through
// the store, carrying written (the record this process just wrote) if set.
func (c *Cache) publish(ctx context.Context, ks *keyState, written *Record) {
	ks.announce(nil)
	c.announce(ctx, ks.key, ks.channel, written)
}

// announce publishes rec's announcement on channel, even if ctx has ended.
func (c *Cache) announce(ctx context.Context, key, channel string, rec *Record) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.lockTTL)
	defer cancel()
	if err := c.store.Publish(ctx, key, channel, rec); err != nil {
		c.storeFailed(err)
	}
}

// written returns rec if it is ks's current record and in the store.
func (ks *keyState) written(rec *Record) *Record {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if rec == nil || ks.current != rec || !ks.inStore {
		return nil
	}
	return rec
}

// took puts a record found in the store into L1; its fetch ends the backoff.
func (c *Cache) took(ks *keyState, rec *Record) {
	ks.clearBackoff()
	c.fill(ks, rec, time.Time{}, SourceStore, true)
}

// fill makes rec ks's current record, in the L1 of every live handle.
// refreshAt is when it is due (zero: from RefreshAhead).
func (c *Cache) fill(ks *keyState, rec *Record, refreshAt time.Time, from Source, inStore bool) {
	c.registerMu.Lock()
	defer c.registerMu.Unlock()
	ks.mu.Lock()
	ks.current, ks.refreshAt, ks.source, ks.inStore = rec, refreshAt, from, inStore
	ks.mu.Unlock()
	for _, other := range ks.handles {
		other.l1.Store(other.view(rec))
	}
}

func (ks *keyState) currentRecord() *Record {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return ks.current
}

// StoreAvailable reports whether the store answered its last call.
func (c *Cache) StoreAvailable() bool { return !c.storeDown.Load() }

// storeFailed logs the first failure of an outage.
func (c *Cache) storeFailed(err error) {
	if c.storeDown.CompareAndSwap(false, true) {
		c.log().Warn("token store unavailable; caching tokens in this process until it recovers", zap.Error(err))
	}
}

// storeRecovered logs the end of an outage.
func (c *Cache) storeRecovered() {
	if c.storeDown.CompareAndSwap(true, false) {
		c.log().Info("token store recovered")
	}
}
