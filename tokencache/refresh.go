package tokencache

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
)

var (
	errEmptyToken    = errors.New("tokencache: the token endpoint returned an empty access token")
	errTokenTooShort = errors.New("tokencache: the token endpoint returned a token that expires within the refresh window")
)

// refresh gets a valid record for e when its L1 has none. In this process
// one refresh per record key runs at a time (singleflight), detached from
// the first caller's cancellation so that the other callers still get its
// result; every caller returns as soon as its own ctx ends.
func (c *Cache) refresh(ctx context.Context, e *entry) (ClientCredential, error) {
	if c.beforeFlight != nil {
		c.beforeFlight(e.key)
	}
	results := c.flights.DoChan(e.key, func() (any, error) {
		// Long enough to wait for another replica and then fetch; store
		// calls have their own, shorter, timeouts.
		flightCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.waitTimeout+2*c.lockTTL)
		defer cancel()
		return c.load(flightCtx, e)
	})
	select {
	case <-ctx.Done():
		return ClientCredential{}, NewError(CodeTokenRequestFailed,
			fmt.Sprintf("waiting for a token for application %q: %v", e.app.Name, ctx.Err()), ctx.Err())
	case res := <-results:
		if res.Err != nil {
			return ClientCredential{}, requestFailed(e, res.Err)
		}
		rec := *res.Val.(*ClientCredential)
		rec.ApplicationName = e.app.Name
		rec.Scope = e.scope
		return rec, nil
	}
}

// requestFailed wraps a refresh failure in an *Error, unless it is one.
func requestFailed(e *entry, err error) *Error {
	var coded *Error
	if errors.As(err, &coded) {
		return coded
	}
	return NewError(CodeTokenRequestFailed,
		fmt.Sprintf("requesting a token for application %q: %v", e.app.Name, err), err)
}

// load is the body of a refresh: the store's record if valid, else a fetch
// by whichever replica takes the lock while the others wait for its record.
// Any store failure makes it fetch on its own.
func (c *Cache) load(ctx context.Context, e *entry) (*ClientCredential, error) {
	// A refresh that ended just before this one began may have filled L1.
	if rec := e.l1.Load(); rec.validFor(c.now(), c.refreshWindow) {
		return rec, nil
	}
	existing, err := c.read(ctx, e)
	if err != nil {
		return c.fetch(ctx, e, nil, false)
	}
	if existing.validFor(c.now(), c.refreshWindow) {
		c.fill(e.key, existing)
		return existing, nil
	}
	owner, ok, err := c.store.TryLock(ctx, e.lockKey, c.lockTTL)
	if err != nil {
		c.storeFailed(err)
		return c.fetch(ctx, e, existing, false)
	}
	c.storeRecovered()
	if ok {
		return c.fetchLocked(ctx, e, owner)
	}
	return c.await(ctx, e, existing)
}

// fetchLocked runs while holding the refresh lock: it reads the store again
// (another replica may have written between our read and our lock), fetches
// if still needed, writes the record, and releases the lock.
func (c *Cache) fetchLocked(ctx context.Context, e *entry, owner string) (*ClientCredential, error) {
	defer c.unlock(ctx, e, owner)
	existing, err := c.read(ctx, e)
	if err == nil && existing.validFor(c.now(), c.refreshWindow) {
		c.fill(e.key, existing)
		return existing, nil
	}
	return c.fetch(ctx, e, existing, err == nil)
}

// await polls the store, as a lock loser, until the winner's record
// appears, the lock is free to take (the winner failed), or WaitTimeout
// passes; then it fetches on its own.
func (c *Cache) await(ctx context.Context, e *entry, existing *ClientCredential) (*ClientCredential, error) {
	deadline := time.NewTimer(c.waitTimeout)
	defer deadline.Stop()
	poll := time.NewTicker(c.pollInterval)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline.C:
			c.logger.Warn("no token from the replica holding the refresh lock; fetching one",
				zap.String("application", e.app.Name), zap.Duration("waited", c.waitTimeout))
			return c.fetch(ctx, e, existing, true)
		case <-poll.C:
		}
		rec, err := c.read(ctx, e)
		if err != nil {
			return c.fetch(ctx, e, existing, false)
		}
		if rec.validFor(c.now(), c.refreshWindow) {
			c.fill(e.key, rec)
			return rec, nil
		}
		if rec != nil {
			existing = rec
		}
		owner, ok, err := c.store.TryLock(ctx, e.lockKey, c.lockTTL)
		if err != nil {
			c.storeFailed(err)
			return c.fetch(ctx, e, existing, false)
		}
		if ok {
			return c.fetchLocked(ctx, e, owner)
		}
	}
}

// read returns the store's record for e, nil if there is none (or it does
// not decode), or the store's error.
func (c *Cache) read(ctx context.Context, e *entry) (*ClientCredential, error) {
	rec, err := c.store.Get(ctx, e.key)
	switch {
	case err == nil:
		c.storeRecovered()
		return rec, nil
	case errors.Is(err, ErrNotFound):
		c.storeRecovered()
		if err != ErrNotFound { // wrapped: there is a record, and it does not decode
			c.logger.Warn("discarding a token record that does not decode",
				zap.String("application", e.app.Name), zap.Error(err))
		}
		return nil, nil
	default:
		c.storeFailed(err)
		return nil, err
	}
}

// fetch calls e's Fetch, checks the token, and makes the record: CreatedAt
// from existing if any, written to the store if write, and into L1.
func (c *Cache) fetch(ctx context.Context, e *entry, existing *ClientCredential, write bool) (*ClientCredential, error) {
	// The lock lasts LockTTL: a longer fetch could overlap another replica's.
	fetchCtx, cancel := context.WithTimeout(ctx, c.lockTTL)
	defer cancel()
	fetched, err := c.callFetch(fetchCtx, e)
	if err != nil {
		return nil, err
	}
	now := c.now()
	if fetched.AccessToken == "" {
		return nil, errEmptyToken
	}
	expiresAt := fetched.ExpiresAt.UTC().Truncate(time.Millisecond)
	left := expiresAt.Sub(now)
	if left <= c.refreshWindow {
		return nil, fmt.Errorf("%w (%s left, window %s)", errTokenTooShort, left.Round(time.Second), c.refreshWindow)
	}
	now = now.UTC().Truncate(time.Millisecond)
	rec := &ClientCredential{
		ID:                   e.key,
		ApplicationName:      e.app.Name,
		AccessToken:          fetched.AccessToken,
		AccessTokenExpiresAt: expiresAt,
		Scope:                e.scope,
		CreatedAt:            now,
		UpdatedAt:            now,
	}
	if existing != nil && !existing.CreatedAt.IsZero() {
		rec.CreatedAt = existing.CreatedAt
	}
	if write {
		if err := c.store.Set(ctx, e.key, rec, left); err != nil {
			c.storeFailed(err)
		} else {
			c.storeRecovered()
		}
	}
	c.fill(e.key, rec)
	c.logger.Info("fetched access token",
		zap.String("application", e.app.Name),
		zap.String("record_key", e.key),
		zap.Time("expires_at", expiresAt),
		zap.Bool("shared", write))
	return rec, nil
}

// callFetch calls e's Fetch, turning a panic into an error: it runs in a
// singleflight goroutine, where a panic would end the process.
func (c *Cache) callFetch(ctx context.Context, e *entry) (fetched Fetched, err error) {
	defer func() {
		if r := recover(); r != nil {
			c.logger.Error("token fetch function panicked",
				zap.String("application", e.app.Name), zap.Stack("stack"))
			err = fmt.Errorf("tokencache: the fetch function of application %q panicked", e.app.Name)
		}
	}()
	return e.app.Fetch(ctx)
}

// unlock releases the refresh lock, even if ctx has ended.
func (c *Cache) unlock(ctx context.Context, e *entry, owner string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.lockTTL)
	defer cancel()
	released, err := c.store.Unlock(ctx, e.lockKey, owner)
	switch {
	case err != nil:
		c.storeFailed(err)
	case !released:
		c.logger.Warn("refresh lock expired before it was released; another replica may have fetched too",
			zap.String("application", e.app.Name), zap.Duration("lock_ttl", c.lockTTL))
	}
}

// fill puts rec into the L1 of every application sharing key, each with its
// own name and scope.
func (c *Cache) fill(key string, rec *ClientCredential) {
	c.registerMu.Lock()
	entries := c.byKey[key]
	c.registerMu.Unlock()
	for _, en := range entries {
		cp := *rec
		cp.ApplicationName = en.app.Name
		cp.Scope = en.scope
		en.l1.Store(&cp)
	}
}

// storeFailed logs the first failure of an outage.
func (c *Cache) storeFailed(err error) {
	if c.storeDown.CompareAndSwap(false, true) {
		c.logger.Warn("token store unavailable; caching tokens in this process until it recovers", zap.Error(err))
	}
}

// storeRecovered logs the end of an outage.
func (c *Cache) storeRecovered() {
	if c.storeDown.CompareAndSwap(true, false) {
		c.logger.Info("token store recovered")
	}
}
