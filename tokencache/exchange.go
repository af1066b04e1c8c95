package tokencache

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/internal/jws"
)

// Exchanges: tokens obtained for a caller's credential (a user's token,
// exchanged on the user's behalf), one per user token, never refreshed in
// the background (the user token may be gone). An Exchanger keeps them per
// application: in a bounded in-process level (its L1, least recently used
// out) and, when the store is shared and authenticated, in the store under
// a keyed hash of the user token, sealed as records are. One exchange per
// user token runs at a time in the process (single flight) and, through
// the store's lock, in the fleet; losers wait for the winner's record.

// DefaultMaxExchangeEntries bounds an Exchanger's L1 when
// ExchangeOptions.MaxEntries is not set.
const DefaultMaxExchangeEntries = 10000

// ExchangeOptions configure an Exchanger.
type ExchangeOptions struct {
	// Name is the application's name, in records and logs.
	Name string
	// Identity is what makes the application's tokens distinct besides
	// scopes (Application.CacheKey): whose credential exchanges. Required.
	Identity string
	// Scopes are the scopes of the exchanged tokens.
	Scopes []string
	// MaxEntries bounds the exchanged tokens kept in process, and
	// separately the user tokens remembered as refused and the entries
	// logged as failing the checks of store-read tokens. Default
	// DefaultMaxExchangeEntries.
	MaxEntries int
	// HashKey keys the entries' names (see DeriveExchangeKey): every
	// replica sharing the store must have the same. Nil: a random key of
	// this process, and the store is not used (nothing is shared).
	HashKey []byte
	// Tenants is how many tenants the application's users come from (its
	// own and the allowed ones): the backoffs kept, one per tenant an
	// exchange went to, are at most that many. Default 1.
	Tenants int
	// MaxFlights bounds the distinct user tokens whose exchange this
	// process runs at once for the application (their requests waiting):
	// a request that would start one more is refused at once with an
	// *Error whose RetryAfter is ExchangesBusyRetry and whose cause is
	// ErrExchangesBusy. Default four times the cache's token request slots
	// for exchanges (32 with FetchConcurrency's default 16).
	MaxFlights int
	// Rejected tells a failure of the user's token (Entra refused that one
	// token, or the user must act) from the application's, and how long
	// to answer that user token with the same failure without asking
	// again (never past the token's own expiry, notAfter). Such a failure
	// starts no backoff. Nil: every failure is the application's.
	Rejected func(err error) (remember time.Duration, ok bool)
	// OnExchange, when set, is told how each Exchange call was served. It
	// must not block.
	OnExchange func(ExchangeResult)
}

// ExchangeResult says how an Exchange call was served, for metrics.
type ExchangeResult string

// Exchange results.
const (
	ExchangeHit       ExchangeResult = "hit"       // from the Exchanger's L1
	ExchangeShared    ExchangeResult = "shared"    // from the store: another replica exchanged
	ExchangeExchanged ExchangeResult = "exchanged" // this call's exchange succeeded
	ExchangeRejected  ExchangeResult = "rejected"  // the user's token was refused (now, or remembered)
	ExchangeFailed    ExchangeResult = "failed"    // the application's failure, or a backoff
	ExchangeBusy      ExchangeResult = "busy"      // refused: MaxFlights exchanges in flight
)

// Exchanger holds the exchanged tokens of one application. It is safe for
// concurrent use; Close stops its watcher.
type Exchanger struct {
	c         *Cache
	opts      ExchangeOptions
	scope     string
	namer     *entryNamer
	shared    bool // the store holds entries for the fleet
	dropKey   string
	entries   *boundedMemory[entryDigest, *Record]
	rejected  *boundedMemory[entryDigest, error]
	tampered  *boundedMemory[entryDigest, struct{}] // entries logged as failing the checks
	flightsMu sync.Mutex
	flights   map[entryDigest]*exchangeFlight // at most opts.MaxFlights with callers

	mu       sync.Mutex
	backoffs map[string]tenantBackoff // by the tenant exchanges went to; at most opts.Tenants

	stopWatch context.CancelFunc
}

// NewExchanger returns the Exchanger of one application. Entries go
// through the store only when opts.HashKey is set and the store
// authenticates its records and is shared (not a MemoryStore): a
// plaintext store never holds a token exchanged for a user.
func (c *Cache) NewExchanger(opts ExchangeOptions) (*Exchanger, error) {
	if opts.Identity == "" {
		return nil, errors.New("tokencache: an exchanger needs its application's identity")
	}
	opts.MaxEntries = cmp.Or(opts.MaxEntries, DefaultMaxExchangeEntries)
	opts.Tenants = cmp.Or(opts.Tenants, 1)
	opts.MaxFlights = cmp.Or(opts.MaxFlights, 4*cap(c.fetchSlots.exchange))
	if opts.MaxEntries < 0 || opts.Tenants < 0 || opts.MaxFlights < 0 {
		return nil, errors.New("tokencache: an exchanger's bounds must be positive")
	}
	_, inMemory := c.store.(*MemoryStore)
	e := &Exchanger{
		c:        c,
		opts:     opts,
		scope:    strings.Join(opts.Scopes, " "),
		shared:   opts.HashKey != nil && c.store.Authenticates() && !inMemory,
		entries:  newBoundedMemory[entryDigest, *Record](opts.MaxEntries),
		rejected: newBoundedMemory[entryDigest, error](opts.MaxEntries),
		tampered: newBoundedMemory[entryDigest, struct{}](opts.MaxEntries),
		backoffs: make(map[string]tenantBackoff),
		flights:  make(map[entryDigest]*exchangeFlight),
	}
	hashKey := opts.HashKey
	if hashKey == nil {
		hashKey = randomExchangeKey()
	}
	e.namer = newEntryNamer(hashKey, opts.Identity, opts.Scopes)
	e.dropKey = exchangeDropKey(c.store.KeyPrefix(), e.namer)
	ctx, cancel := context.WithCancel(c.closing)
	e.stopWatch = cancel
	if e.shared && c.startBackground() {
		go e.watchDrops(ctx)
	}
	return e, nil
}

// Shared reports whether the Exchanger's entries go through the store.
func (e *Exchanger) Shared() bool { return e.shared }

// Close stops the watcher of the fleet's drops; Exchange still works.
func (e *Exchanger) Close() { e.stopWatch() }

// Len returns the number of exchanged tokens held in process.
func (e *Exchanger) Len() int { return e.entries.len() }

// key returns the store key of an entry.
func (e *Exchanger) key(d entryDigest) string {
	return exchangeEntryKey(e.c.store.KeyPrefix(), d)
}

// Lookup returns, without I/O and without checking userToken, the token
// exchanged for it while it is usable (found), or the refusal remembered
// for it (err): the warm path, on which the caller may skip its own checks
// of the user token, since an entry exists only for a token that passed
// them and never outlives it. Neither: found is false and err nil.
func (e *Exchanger) Lookup(userToken string) (rec Record, found bool, err error) {
	d := e.namer.digest(userToken)
	now := e.c.now()
	if entry, ok := e.entries.get(d, now); ok {
		e.report(ExchangeHit)
		return *entry, true, nil
	}
	if refusal, ok := e.rejected.get(d, now); ok {
		e.report(ExchangeRejected)
		return Record{}, false, refusal
	}
	return Record{}, false, nil
}

// Exchange returns the token exchanged for userToken: from L1, from the
// store, or from exchange (which must exchange that very userToken at
// tenant, the user's tenant: a failure of the application there pauses
// the exchanges of that tenant's users only). The
// token is used while more than RefreshWindow is left before its expiry,
// and never at or after notAfter (the user token's own expiry). A user
// token whose exchange was refused (ExchangeOptions.Rejected) is answered
// with the same error, without asking again, for as long as Rejected
// says. Errors are *Error, whose Err is exchange's error.
func (e *Exchanger) Exchange(ctx context.Context, userToken, tenant string, notAfter time.Time, exchange FetchFunc) (Record, error) {
	if rec, found, err := e.Lookup(userToken); found || err != nil {
		return rec, err
	}
	d := e.namer.digest(userToken)
	now := e.c.now()
	if !now.Before(notAfter) {
		e.report(ExchangeRejected)
		return Record{}, requestError(ErrUserTokenExpired, "the user's token has expired")
	}
	if b, cause, ok := e.activeBackoff(tenant, now); ok {
		e.report(ExchangeFailed)
		return Record{}, e.backedOff(b, cause, now)
	}
	call := exchangeCall{key: e.key(d), tenant: tenant, notAfter: notAfter, exchange: exchange}
	f, led, err := e.join(d, func(waiting context.Context) (exchanged, error) {
		// A flight that ended between this request's Lookup and its join
		// left its token in L1.
		if rec, ok := e.entries.get(d, e.c.now()); ok {
			return exchanged{rec, ExchangeHit}, nil
		}
		flightCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx),
			time.Duration(loserWaitLockTTLs+fetchTimeoutLockTTLs+1)*e.c.lockTTL)
		defer cancel()
		stop := context.AfterFunc(e.c.closing, cancel)
		defer stop()
		call.waiting = waiting
		return e.load(flightCtx, call)
	})
	if err != nil {
		e.report(ExchangeBusy)
		return Record{}, err
	}
	defer e.leave(d, f)
	wait := time.NewTimer(e.c.waitTimeout)
	defer wait.Stop()
	select {
	case <-ctx.Done():
		return Record{}, requestError(ctx.Err(), "waiting for an exchanged token for application %q: %v", e.opts.Name, ctx.Err())
	case <-wait.C:
		return Record{}, requestError(context.DeadlineExceeded,
			"no exchanged token for application %q within %s", e.opts.Name, e.c.waitTimeout)
	case <-f.done:
		if f.err != nil {
			e.report(e.failureResult(f.err))
			return Record{}, f.err
		}
		served := f.val
		if !led {
			served.result = ExchangeHit // joined another request's flight
		}
		e.report(served.result)
		return *served.rec, nil
	}
}

// ErrUserTokenExpired is the cause of an Exchange refused because its user
// token's expiry (notAfter) has passed.
var ErrUserTokenExpired = errors.New("tokencache: the user token has expired")

// exchanged is a flight's result.
type exchanged struct {
	rec    *Record
	result ExchangeResult
}

// Drop forgets the token exchanged for userToken, which downstream refused
// (a claims challenge of continuous access evaluation): in this process,
// in the store, and in every replica watching the store's announcements.
// The next request with that user token exchanges again.
func (e *Exchanger) Drop(ctx context.Context, userToken string) {
	d := e.namer.digest(userToken)
	e.entries.remove(d)
	key := e.key(d)
	if !e.shared {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.c.lockTTL)
	defer cancel()
	if err := e.c.store.RemoveRecord(ctx, key); err != nil {
		e.c.storeFailed(err)
		return
	}
	// The announcement names the entry (its key, a keyed hash), sealed
	// under the drop key: only a replica with the fleet's secret can make
	// or read it.
	if err := e.c.store.Publish(ctx, e.dropKey, UpdateChannel(e.dropKey), &Record{ID: key, ApplicationName: e.opts.Name}); err != nil {
		e.c.storeFailed(err)
	}
}

// watchDrops forgets the entries other replicas announce they dropped,
// until ctx ends.
func (e *Exchanger) watchDrops(ctx context.Context) {
	defer e.c.background.Done()
	updates, cancel := e.c.store.Watch(ctx, e.dropKey, UpdateChannel(e.dropKey))
	defer func() {
		if cancel != nil {
			cancel()
		}
	}()
	if updates == nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case rec := <-updates:
			if rec == nil {
				continue
			}
			if d, ok := parseEntryKey(e.c.store.KeyPrefix(), rec.ID); ok {
				e.entries.remove(d)
			}
		}
	}
}

// load is an exchange's flight: the store's entry if another replica made
// it, else an exchange under the store's lock (losers wait for the
// winner's entry, as for client credentials); any store failure makes it
// exchange on its own.
func (e *Exchanger) load(ctx context.Context, call exchangeCall) (exchanged, error) {
	key, notAfter := call.key, call.notAfter
	if !e.shared {
		return e.exchange(ctx, call, false)
	}
	if rec, ok, err := e.read(ctx, key, notAfter); err != nil {
		return e.exchange(ctx, call, false)
	} else if ok {
		return exchanged{rec, ExchangeShared}, nil
	}
	// Listen before trying the lock, so that the winner's announcement
	// cannot fall between our losing and our listening.
	updates, stopWatching := e.c.store.Watch(ctx, key, UpdateChannel(key))
	if stopWatching != nil {
		defer stopWatching()
	}
	lockKey, lockTTL := LockKey(key), (fetchTimeoutLockTTLs+1)*e.c.lockTTL
	giveUp := time.NewTimer(e.loserWait())
	defer giveUp.Stop()
	interval := e.c.pollInterval
	for {
		owner, ok, err := e.c.store.TryLock(ctx, lockKey, lockTTL)
		if err != nil {
			e.c.storeFailed(err)
			return e.exchange(ctx, call, false)
		}
		if ok {
			return e.exchangeLocked(ctx, call, lockKey, owner)
		}
		poll := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			poll.Stop()
			return exchanged{}, requestError(ctx.Err(), "waiting for an exchanged token for application %q: %v", e.opts.Name, ctx.Err())
		case <-call.waiting.Done():
			poll.Stop()
			return exchanged{}, errCallersGone(e.opts.Name)
		case <-giveUp.C:
			poll.Stop()
			e.c.log().Warn("no exchanged token from the replica holding the lock; exchanging",
				zap.String("application", e.opts.Name), zap.Duration("waited", e.loserWait()))
			return e.exchange(ctx, call, true)
		case rec := <-updates:
			poll.Stop()
			if rec != nil && e.usable(key, rec, notAfter) {
				e.keep(key, rec, notAfter)
				return exchanged{rec, ExchangeShared}, nil
			}
		case <-poll.C:
			interval = min(2*interval, max(e.c.lockTTL/3, e.c.pollInterval))
		}
		if rec, ok, err := e.read(ctx, key, notAfter); err != nil {
			return e.exchange(ctx, call, false)
		} else if ok {
			return exchanged{rec, ExchangeShared}, nil
		}
	}
}

// exchangeLocked exchanges while holding the entry's lock (after reading
// the store again: the last holder may have written since), writes the
// entry, releases the lock and announces the entry to the losers.
func (e *Exchanger) exchangeLocked(ctx context.Context, call exchangeCall, lockKey, owner string) (exchanged, error) {
	key, notAfter := call.key, call.notAfter
	unlocked := false
	unlock := func() {
		if unlocked {
			return
		}
		unlocked = true
		unlockCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.c.lockTTL)
		defer cancel()
		// A lock left behind stalls that user's requests on every replica
		// for the loser's wait: a slow answer is tried again.
		var err error
		for range unlockAttempts {
			if _, err = e.c.store.Unlock(unlockCtx, lockKey, owner); err == nil {
				return
			}
		}
		e.c.storeFailed(err)
	}
	defer unlock()
	if rec, ok, err := e.read(ctx, key, notAfter); err == nil && ok {
		return exchanged{rec, ExchangeShared}, nil
	}
	res, err := e.exchange(ctx, call, true)
	unlock()
	publishCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.c.lockTTL)
	defer cancel()
	// Losers wake on it: with the entry, or (a failure) to take the lock.
	if pubErr := e.c.store.Publish(publishCtx, key, UpdateChannel(key), res.rec); pubErr != nil {
		e.c.storeFailed(pubErr)
	}
	return res, err
}

// unlockAttempts is how many times an exchange lock's release is sent
// while it fails.
const unlockAttempts = 3

// loserWait is how long a request waits for the replica holding the lock
// of its user token before it exchanges on its own: a user's request
// cannot wait as long as a refresh (WaitTimeout ends it), so half of
// WaitTimeout, and never more than a refresh's loser waits.
func (e *Exchanger) loserWait() time.Duration {
	return min(max(e.c.waitTimeout/2, e.c.pollInterval), loserWaitLockTTLs*e.c.lockTTL)
}

// read returns the store's entry under key if it is usable until notAfter
// (ok), or the store's error.
func (e *Exchanger) read(ctx context.Context, key string, notAfter time.Time) (*Record, bool, error) {
	rec, err := e.c.store.Get(ctx, key)
	switch {
	case errors.Is(err, ErrNotFound):
		e.c.storeRecovered()
		return nil, false, nil
	case err != nil:
		e.c.storeFailed(err)
		return nil, false, err
	}
	e.c.storeRecovered()
	if !e.usable(key, rec, notAfter) {
		return nil, false, nil
	}
	e.keep(key, rec, notAfter)
	return rec, true, nil
}

// maxExchangedLifetime is the longest a store-read exchanged token may
// live: Entra issues tokens for continuous access evaluation
// (client_capabilities cp1) that live up to about 28 hours, longer than
// the 24 hours a client-credentials key allows before it has had a token
// of its own, and an exchanger's entries have no own token to learn from
// (each user token is exchanged once in the fleet). Use is bounded by the
// user token's own expiry besides.
const maxExchangedLifetime = 30 * time.Hour

// usable reports whether rec, read from the store under key or announced,
// may be used: a token with more than RefreshWindow left, recorded under
// its own key, passing the checks every store-read token passes
// (accept.go) with maxExchangedLifetime as their bound. A record that
// fails them is logged once per entry (until its expiry) as possible
// tampering.
func (e *Exchanger) usable(key string, rec *Record, notAfter time.Time) bool {
	now := e.c.now()
	if !rec.validFor(now, e.c.refreshWindow) || !now.Before(notAfter) {
		return false
	}
	err := tokenProblemWithin(maxExchangedLifetime, rec, now)
	if err == nil {
		return true
	}
	if d, ok := parseEntryKey(e.c.store.KeyPrefix(), key); ok {
		if _, said := e.tampered.get(d, now); said {
			return false
		}
		e.tampered.put(d, struct{}{}, minTime(rec.AccessTokenExpiresAt, notAfter))
	}
	e.c.log().Warn("ignoring an exchanged token record that fails the token checks; possible tampering",
		zap.String("application", e.opts.Name), zap.Error(err))
	return false
}

// keep puts rec into L1 until the earlier of its usable end and notAfter.
func (e *Exchanger) keep(key string, rec *Record, notAfter time.Time) {
	d, _ := parseEntryKey(e.c.store.KeyPrefix(), key)
	e.entries.put(d, rec, minTime(rec.AccessTokenExpiresAt.Add(-e.c.refreshWindow), notAfter))
}

// exchange calls call.exchange, bounded by the cache's token request
// slots for exchanges (waiting for one only while a caller waits), and
// keeps its token, writing it to the store if write; a refusal of the
// user's token is remembered, any other failure starts this process's
// backoff of the exchanges at call.tenant.
func (e *Exchanger) exchange(ctx context.Context, call exchangeCall, write bool) (exchanged, error) {
	key, notAfter := call.key, call.notAfter
	if call.waiting.Err() != nil {
		return exchanged{}, errCallersGone(e.opts.Name)
	}
	slotCtx, cancelSlot := context.WithCancel(ctx)
	stopSlot := context.AfterFunc(call.waiting, cancelSlot)
	release, err := e.c.fetchSlots.acquire(withExchange(slotCtx))
	stopSlot()
	cancelSlot()
	if call.waiting.Err() != nil { // the last request left while this one waited
		if err == nil {
			release()
		}
		return exchanged{}, errCallersGone(e.opts.Name)
	}
	if err != nil {
		return exchanged{}, requestError(err, "waiting to exchange a token for application %q: %v", e.opts.Name, err)
	}
	defer release()
	fetchCtx, cancel := context.WithTimeout(ctx, fetchTimeoutLockTTLs*e.c.lockTTL)
	defer cancel()
	fetched, err := e.call(fetchCtx, call.exchange)
	now := e.c.now()
	if err == nil {
		err = e.checkFetched(&fetched, now)
	}
	if err != nil {
		return exchanged{}, e.failed(ctx, key, call.tenant, notAfter, err, now)
	}
	e.clearBackoff(call.tenant)
	stamp := now.UTC().Truncate(time.Millisecond)
	rec := &Record{ID: key, ApplicationName: e.opts.Name, AccessToken: fetched.AccessToken,
		AccessTokenExpiresAt: fetched.ExpiresAt, Scope: e.scope, CreatedAt: stamp, UpdatedAt: stamp}
	e.keep(key, rec, notAfter)
	if ttl := minTime(rec.AccessTokenExpiresAt, notAfter).Sub(now); write && ttl > 0 {
		if err := e.c.store.Set(ctx, key, rec, ttl); err != nil && !errors.Is(err, ErrTooLarge) {
			e.c.storeFailed(err)
		}
	}
	return exchanged{rec, ExchangeExchanged}, nil
}

// checkFetched refuses an empty token or one within RefreshWindow of its
// expiry, and records a JWT with its own exp (as the store's readers check).
func (e *Exchanger) checkFetched(fetched *Fetched, now time.Time) error {
	if fetched.AccessToken == "" {
		return errEmptyToken
	}
	fetched.ExpiresAt = fetched.ExpiresAt.UTC().Truncate(time.Millisecond)
	if tok, err := jws.Parse(fetched.AccessToken); err == nil {
		if exp, ok := tok.Time("exp"); ok {
			fetched.ExpiresAt = exp.UTC()
		}
	}
	if left := fetched.ExpiresAt.Sub(now); left <= e.c.refreshWindow {
		return fmt.Errorf("%w (%s left, window %s)", errTokenTooShort, left.Round(time.Second), e.c.refreshWindow)
	}
	return nil
}

// call calls exchange, turning a panic into an error.
func (e *Exchanger) call(ctx context.Context, exchange FetchFunc) (fetched Fetched, err error) {
	defer func() {
		if r := recover(); r != nil {
			e.c.log().Error("token exchange function panicked", zap.String("application", e.opts.Name), zap.Stack("stack"))
			err = fmt.Errorf("%w (application %q)", errFetchPanicked, e.opts.Name)
		}
	}()
	return exchange(ctx)
}

// failed turns an exchange's failure into the *Error its callers get: a
// refusal of the user's token is remembered for that token; our own
// cancellation is neither remembered nor backed off; any other failure of
// the endpoint backs off, in this process, the exchanges at tenant (the
// tenant the exchange went to) only: a token naming another allowed tenant
// (anyone can write one) cannot pause the application's other users, nor
// show them that tenant's failure.
func (e *Exchanger) failed(ctx context.Context, key, tenant string, notAfter time.Time, err error, now time.Time) error {
	wrapped := requestError(err, "exchanging a token for application %q: %v", e.opts.Name, err)
	if e.opts.Rejected != nil {
		if remember, ok := e.opts.Rejected(err); ok {
			if until := minTime(now.Add(remember), notAfter); remember > 0 && until.After(now) {
				d, _ := parseEntryKey(e.c.store.KeyPrefix(), key)
				e.rejected.put(d, error(wrapped), until)
			}
			wrapped.Permanent = true
			return wrapped
		}
	}
	if ctx.Err() != nil || isLocalFailure(err) {
		return wrapped
	}
	result, retryAfter := classify(err)
	e.mu.Lock()
	defer e.mu.Unlock()
	tb, known := e.backoffs[tenant]
	if !known {
		e.makeRoomForBackoff(now)
	}
	tb.Attempts++
	tb.Permanent = result == FetchPermanent
	tb.Until = now.Add(backoffDelay(tb.Attempts, tb.Permanent, retryAfter, e.c.random()))
	tb.Message = wrapped.Message
	tb.cause = err
	e.backoffs[tenant] = tb
	wrapped.Permanent = tb.Permanent
	if !wrapped.Permanent {
		wrapped.RetryAfter = tb.Until.Sub(now)
	}
	return wrapped
}

// activeBackoff returns the backoff of the exchanges at tenant if it runs
// at now.
func (e *Exchanger) activeBackoff(tenant string, now time.Time) (Backoff, error, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	tb, ok := e.backoffs[tenant]
	if !ok || !now.Before(tb.Until) {
		return Backoff{}, nil, false
	}
	return tb.Backoff, tb.cause, true
}

// backedOff is the error of a call made while backoff b runs, as the
// handles' (backedOff of backoff.go).
func (e *Exchanger) backedOff(b Backoff, cause error, now time.Time) *Error {
	wait := b.Until.Sub(now)
	err := requestError(cause, "%s; token exchanges paused for %s", b.Message, ceilSecond(wait))
	err.Permanent = b.Permanent
	if !b.Permanent {
		err.RetryAfter = wait
	}
	return err
}

// clearBackoff ends the backoff of the exchanges at tenant after a success.
func (e *Exchanger) clearBackoff(tenant string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.backoffs, tenant)
}

// failureResult is ExchangeRejected for a refusal of the user's token,
// else ExchangeFailed.
func (e *Exchanger) failureResult(err error) ExchangeResult {
	if e.opts.Rejected != nil {
		if _, ok := e.opts.Rejected(err); ok {
			return ExchangeRejected
		}
	}
	return ExchangeFailed
}

// report tells OnExchange how a call was served.
func (e *Exchanger) report(result ExchangeResult) {
	if e.opts.OnExchange != nil {
		e.opts.OnExchange(result)
	}
}

// minTime returns the earlier of a and b.
func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
