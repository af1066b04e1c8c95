package tokencache

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/internal/jws"
)

// Exchanges: tokens obtained on a user's behalf, one per user token, never
// refreshed in the background (the user token may be gone). An Exchanger
// keeps them in a bounded LRU L1 and, when the store is shared and
// authenticated, in the store under a keyed hash of the user token. One
// exchange per user token runs at a time in the process and, through the
// store's lock, in the fleet.

// DefaultMaxExchangeEntries is ExchangeOptions.MaxEntries' default.
const DefaultMaxExchangeEntries = 10000

// ExchangeOptions configure an Exchanger.
type ExchangeOptions struct {
	// Name is the application's name, in records and logs.
	Name string
	// Identity is whose credential exchanges (as Application.CacheKey).
	// Required.
	Identity string
	// Scopes are the scopes of the exchanged tokens.
	Scopes []string
	// MaxEntries bounds, each, the exchanged tokens kept in process, the
	// refusals remembered and the entries logged as failing the checks.
	// Default DefaultMaxExchangeEntries.
	MaxEntries int
	// HashKey keys the entries' names (see DeriveExchangeKey), the same on
	// every replica. Nil: a random key, and the store is not used.
	HashKey []byte
	// Tenants bounds the backoffs kept, one per tenant exchanges went to
	// (the application's own and its allowed ones). Default 1.
	Tenants int
	// MaxFlights bounds the user tokens whose exchange runs at once with
	// requests waiting; one more is refused with ErrExchangesBusy and
	// RetryAfter ExchangesBusyRetry. Default four times the exchange slots
	// (32 with FetchConcurrency's default).
	MaxFlights int
	// Rejected tells a refusal of the user's token from the application's
	// failure, and how long to answer that user token with it without
	// asking again (never past notAfter); it starts no backoff. Nil: every
	// failure is the application's.
	Rejected func(err error) (remember time.Duration, ok bool)
	// OnExchange, when set, is told how each call was served; must not block.
	OnExchange func(ExchangeResult)
	// VerifyShared checks an entry another replica exchanged (read from the
	// store or announced) against the user token it is for, after the token
	// checks; an error makes it ignored and logged once as possible
	// tampering. Nil: no such check.
	VerifyShared func(rec *Record, userToken string) error
	// CredentialIDFunc identifies the credential exchanges are sent with
	// now, as Application.CredentialIDFunc: a permanent failure pauses a
	// tenant's exchanges for that credential only (one rotated on disk is
	// not held back). Nil: it pauses them for every credential.
	CredentialIDFunc func() string
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
// concurrent use.
type Exchanger struct {
	c         *Cache
	opts      ExchangeOptions
	scope     string
	namer     *entryNamer
	shared    bool
	dropKey   string
	entries   *boundedMemory[entryDigest, *Record]
	rejected  *boundedMemory[entryDigest, error]
	tampered  *boundedMemory[entryDigest, struct{}] // logged as failing the checks
	dropped   *boundedMemory[entryDigest, struct{}] // dropped within PurgeInterval
	flightsMu sync.Mutex
	flights   map[entryDigest]*exchangeFlight // at most opts.MaxFlights with callers

	mu       sync.Mutex
	backoffs map[string]tenantBackoff // by the tenant exchanges went to; at most opts.Tenants

	stopWatch context.CancelFunc
}

// NewExchanger returns the Exchanger of one application. Entries go
// through the store only with opts.HashKey and a shared store that
// authenticates records: a plaintext store never holds a user's token.
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
	e := &Exchanger{
		c:        c,
		opts:     opts,
		scope:    strings.Join(opts.Scopes, " "),
		shared:   opts.HashKey != nil && c.store.Authenticates() && !c.inMemory,
		entries:  newBoundedMemory[entryDigest, *Record](opts.MaxEntries),
		rejected: newBoundedMemory[entryDigest, error](opts.MaxEntries),
		tampered: newBoundedMemory[entryDigest, struct{}](opts.MaxEntries),
		dropped:  newBoundedMemory[entryDigest, struct{}](opts.MaxEntries),
		backoffs: make(map[string]tenantBackoff),
		flights:  make(map[entryDigest]*exchangeFlight),
	}
	hashKey := opts.HashKey
	if hashKey == nil { // this process's own: its entries are never found by another
		hashKey = make([]byte, sha256.Size)
		_, _ = rand.Read(hashKey) // crypto/rand.Read never fails (it crashes the program instead)
	}
	e.namer = newEntryNamer(hashKey, opts.Identity, opts.Scopes)
	e.dropKey = exchangeDropKey(c.store.KeyPrefix(), e.namer)
	ctx, cancel := context.WithCancel(c.closing)
	e.stopWatch = cancel
	if e.shared && c.startBackground() {
		subscribed := make(chan struct{})
		go c.runWatch(ctx, e.dropKey, UpdateChannel(e.dropKey), subscribed, e.forgetDropped)
		<-subscribed // a drop announced after NewExchanger reaches this L1, as Register's keys
	}
	return e, nil
}

// Shared reports whether the Exchanger's entries go through the store.
func (e *Exchanger) Shared() bool { return e.shared }

// Close stops the watcher of the fleet's drops; Exchange still works.
func (e *Exchanger) Close() { e.stopWatch() }

// Len returns the number of exchanged tokens held in process.
func (e *Exchanger) Len() int { return e.entries.len() }

func (e *Exchanger) key(d entryDigest) string {
	return exchangeEntryKey(e.c.store.KeyPrefix(), d)
}

// Lookup returns, without I/O, the usable token exchanged for userToken
// (found) or the refusal remembered for it (err). The caller may skip its
// checks of the user token on a hit: an entry exists only for a token that
// passed them and never outlives it.
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

// Exchange returns the token exchanged for userToken: from L1, the store,
// or exchange (which exchanges that userToken at tenant, the user's: a
// failure there pauses that tenant's exchanges only). A token is used while
// more than RefreshWindow is left, never at or after notAfter (the user
// token's expiry). A refusal (ExchangeOptions.Rejected) is remembered.
// Errors are *Error, whose Err is exchange's error.
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
	if err := e.backedOff(tenant, now); err != nil {
		e.report(ExchangeFailed)
		return Record{}, err
	}
	if ctx.Err() != nil { // the client left: no flight, no store call for it
		return Record{}, requestError(ctx.Err(), "waiting for an exchanged token for application %q: %v", e.opts.Name, ctx.Err())
	}
	call := exchangeCall{d: d, key: e.key(d), userToken: userToken, tenant: tenant, notAfter: notAfter, exchange: exchange}
	f, led, err := e.join(d, func(waiting context.Context) (exchanged, error) {
		// A flight that ended since Lookup left its token in L1.
		if rec, ok := e.entries.get(d, e.c.now()); ok {
			return exchanged{rec, ExchangeHit}, nil
		}
		flightCtx, cancel := e.c.flightContext(ctx)
		defer cancel()
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
			e.report(cmp.Or(f.val.result, ExchangeFailed))
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

// ErrUserTokenExpired is the cause of an Exchange after notAfter.
var ErrUserTokenExpired = errors.New("tokencache: the user token has expired")

// exchanged is a flight's result.
type exchanged struct {
	rec    *Record
	result ExchangeResult
}

// Drop forgets the token exchanged for userToken, which downstream refused
// (a claims challenge), here, in the store and in every replica, and
// reports whether it did: one user token's entry is dropped at most once
// per PurgeInterval (10 s by default) in this process, so that a downstream
// that challenges every request cannot make each of them an exchange.
// refused is the exchanged token downstream refused ("" if unknown): an
// entry here, in the store or in another replica that holds another, newer
// one is kept; this replica's entry of the refused token is always dropped
// (then only here when the store holds another).
func (e *Exchanger) Drop(ctx context.Context, userToken, refused string) bool {
	d, print := e.namer.digest(userToken), refusedPrint(refused)
	cur, inL1 := e.entries.get(d, e.c.now())
	if inL1 && replaced(cur, print) {
		return false // a late refusal of a token already replaced here
	}
	if _, held := e.dropped.get(d, e.c.now()); held {
		return false // dropped within the interval: no store read for it
	}
	key := e.key(d)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.c.lockTTL)
	defer cancel()
	storeNewer := false
	if e.shared && print != "" {
		if cur, err := e.c.store.Get(ctx, key); err == nil && replaced(cur, print) {
			if !inL1 {
				return false // replaced by another replica
			}
			storeNewer = true // drop this replica's refused token only
		}
	}
	if !e.mayDrop(d) {
		return false // dropped within the interval
	}
	e.entries.remove(d)
	if !e.shared || storeNewer {
		return true
	}
	if err := e.c.store.RemoveRecord(ctx, key); err != nil {
		e.c.storeFailed(err)
		return true
	}
	// Sealed under the drop key: only a replica with the secret reads it.
	// Within the same budget as the removal: Drop runs in the request.
	// AccessToken names the refused token (refusedPrint), not a token.
	if err := e.c.store.Publish(ctx, e.dropKey, UpdateChannel(e.dropKey),
		&Record{ID: key, ApplicationName: e.opts.Name, AccessToken: print}); err != nil {
		e.c.storeFailed(err)
	}
	return true
}

// forgetDropped forgets the entry another replica announced it dropped,
// as Drop does: at most once per PurgeInterval, so that a Redis writer who
// replays a recorded announcement cannot make each replay an exchange.
func (e *Exchanger) forgetDropped(rec *Record) {
	if rec == nil {
		return
	}
	d, ok := parseEntryKey(e.c.store.KeyPrefix(), rec.ID)
	if !ok {
		return
	}
	if cur, held := e.entries.get(d, e.c.now()); held && replaced(cur, rec.AccessToken) {
		return // the drop of a token this replica no longer holds
	}
	if e.mayDrop(d) {
		e.entries.remove(d)
	}
}

// refusedPrint names a refused exchanged token in a drop: its SHA-256, ""
// for none known.
func refusedPrint(token string) string {
	if token == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(token))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// replaced reports whether rec holds another token than the refused one
// print names (never when print is "": a drop of any token).
func replaced(rec *Record, print string) bool {
	return print != "" && refusedPrint(rec.AccessToken) != print
}

// mayDrop reports whether d's entry may be dropped now (here or by an
// announcement), at most once per PurgeInterval, and counts it if so.
func (e *Exchanger) mayDrop(d entryDigest) bool {
	now := e.c.now()
	return e.dropped.putUnlessHeld(d, struct{}{}, now, now.Add(e.c.purgeInterval))
}

// load is an exchange's flight: the store's entry, else an exchange under
// the store's lock (losers wait for the winner's entry while its holder
// extends it); a store failure makes it exchange on its own. Once its last
// request has left it makes no further store call but to release a lock it
// took and wake that lock's losers: requests that leave at once (anyone can
// send user tokens and hang up) must not make a flood of Redis calls that
// MaxFlights, which counts waited-for flights, never sees.
func (e *Exchanger) load(ctx context.Context, call exchangeCall) (exchanged, error) {
	if call.waiting.Err() != nil {
		return exchanged{}, errCallersGone(e.opts.Name)
	}
	if !e.shared {
		return e.exchange(ctx, call, false)
	}
	if rec, ok, err := e.read(ctx, call); err != nil {
		return e.exchange(ctx, call, false)
	} else if ok {
		return exchanged{rec, ExchangeShared}, nil
	}
	// Listen before trying the lock: an announcement cannot fall between.
	updates, stopWatching := e.c.store.Watch(ctx, call.key, UpdateChannel(call.key))
	if stopWatching != nil {
		defer stopWatching()
	}
	lockKey, beat := LockKey(call.key), e.lockBeat()
	giveUp := time.NewTimer(loserWaitLockTTLs * e.c.lockTTL)
	defer giveUp.Stop()
	interval := min(e.c.pollInterval, beat)
	for {
		if call.waiting.Err() != nil {
			return exchanged{}, errCallersGone(e.opts.Name)
		}
		if err := e.sharedBackoff(ctx, call.tenant); err != nil {
			return exchanged{result: ExchangeFailed}, err
		}
		owner, ok, err := e.c.store.TryLock(ctx, lockKey, 3*beat)
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
				zap.String("application", e.opts.Name), zap.Duration("waited", loserWaitLockTTLs*e.c.lockTTL))
			return e.exchange(ctx, call, true)
		case rec := <-updates:
			poll.Stop()
			if rec != nil && e.usable(call, rec) {
				e.keep(call, rec)
				return exchanged{rec, ExchangeShared}, nil
			}
		case <-poll.C:
			interval = min(2*interval, beat)
		}
		if rec, ok, err := e.read(ctx, call); err != nil {
			return e.exchange(ctx, call, false)
		} else if ok {
			return exchanged{rec, ExchangeShared}, nil
		}
	}
}

// exchangeLocked exchanges under the entry's lock (after reading the store
// again), extending it meanwhile, writes the entry, unlocks and announces
// it to the losers.
func (e *Exchanger) exchangeLocked(ctx context.Context, call exchangeCall, lockKey, owner string) (exchanged, error) {
	locked := true
	// Extended from its taking: the reads below spend the lock's beats too.
	stopExtending := e.c.extendLock(call.key, lockKey, owner, 3*e.lockBeat(),
		"exchange lock lost during a slow token exchange; another replica may exchange too", e.opts.Name)
	defer func() {
		if locked {
			stopExtending()
			_, _ = e.c.releaseLock(ctx, lockKey, owner, unlockAttempts)
		}
	}()
	if call.waiting.Err() != nil { // its requests left: unlock and wake the losers, nothing more
		stopExtending()
		_, _ = e.c.releaseLock(ctx, lockKey, owner, unlockAttempts)
		locked = false
		e.c.announce(ctx, call.key, UpdateChannel(call.key), nil)
		return exchanged{}, errCallersGone(e.opts.Name)
	}
	if rec, ok, err := e.read(ctx, call); err == nil && ok {
		return exchanged{rec, ExchangeShared}, nil
	}
	if err := e.sharedBackoff(ctx, call.tenant); err != nil { // written since our check before TryLock
		return exchanged{result: ExchangeFailed}, err
	}
	res, err := e.exchange(ctx, call, true)
	stopExtending()
	_, _ = e.c.releaseLock(ctx, lockKey, owner, unlockAttempts)
	locked = false
	e.c.announce(ctx, call.key, UpdateChannel(call.key), res.rec)
	return res, err
}

// unlockAttempts is how many times a failing exchange unlock is sent: a
// lock left behind stalls that user on every replica.
const unlockAttempts = 3

// lockBeat is how often an exchange's holder extends its lock, which lasts
// three beats (1.5 s with the default LockTTL: the same on every replica,
// whatever its wait_timeout, so that none takes another's lock over), and
// the longest between a loser's tries of it: a holder that dies stalls the
// losers about four beats after its last extension. A live holder is
// waited for as long as its losers' requests last (WaitTimeout each; a
// refresh's loser wait while requests keep coming).
func (e *Exchanger) lockBeat() time.Duration {
	return e.c.lockTTL / 30
}

// read returns the store's entry of call if usable (ok), or the store's error.
func (e *Exchanger) read(ctx context.Context, call exchangeCall) (*Record, bool, error) {
	rec, err := e.c.store.Get(ctx, call.key)
	switch {
	case errors.Is(err, ErrNotFound):
		e.c.storeRecovered()
		return nil, false, nil
	case err != nil:
		e.c.storeFailed(err)
		return nil, false, err
	}
	e.c.storeRecovered()
	if !e.usable(call, rec) {
		return nil, false, nil
	}
	e.keep(call, rec)
	return rec, true, nil
}

// maxExchangedLifetime is the longest a store-read exchanged token may
// live: Entra's tokens for continuous access evaluation (cp1) live up to
// about 28 hours, and entries have no own token to learn a bound from.
const maxExchangedLifetime = 30 * time.Hour

// usable reports whether rec, read or announced as call's entry, may be
// used: a valid token passing the checks of accept.go (bounded by
// maxExchangedLifetime) and VerifyShared. A failure is logged once per entry.
func (e *Exchanger) usable(call exchangeCall, rec *Record) bool {
	now := e.c.now()
	if !rec.validFor(now, e.c.refreshWindow) || !now.Before(call.notAfter) {
		return false
	}
	err := tokenProblemWithin(maxExchangedLifetime, rec, now)
	if err == nil && e.opts.VerifyShared != nil {
		err = e.opts.VerifyShared(rec, call.userToken)
	}
	if err == nil {
		return true
	}
	if _, said := e.tampered.get(call.d, now); said {
		return false
	}
	e.tampered.put(call.d, struct{}{}, minTime(rec.AccessTokenExpiresAt, call.notAfter))
	e.c.log().Warn("ignoring an exchanged token record that fails the token checks; possible tampering",
		zap.String("application", e.opts.Name), zap.Error(err))
	return false
}

// keep puts rec into L1 as call's entry until it is no longer usable.
func (e *Exchanger) keep(call exchangeCall, rec *Record) {
	e.entries.put(call.d, rec, minTime(rec.AccessTokenExpiresAt.Add(-e.c.refreshWindow), call.notAfter))
}

// exchange calls call.exchange in an exchange slot (waited for only while
// a request waits) and keeps its token, in the store too if write; a
// failure goes through failed.
func (e *Exchanger) exchange(ctx context.Context, call exchangeCall, write bool) (exchanged, error) {
	if call.waiting.Err() != nil {
		return exchanged{}, errCallersGone(e.opts.Name)
	}
	release, _, err := e.c.fetchSlots.acquireUnless(context.WithValue(ctx, exchangeKey{}, true), call.waiting.Done())
	if call.waiting.Err() != nil { // the last request left meanwhile
		if release != nil {
			release()
		}
		return exchanged{}, errCallersGone(e.opts.Name)
	}
	if err != nil {
		return exchanged{}, requestError(err, "waiting to exchange a token for application %q: %v", e.opts.Name, err)
	}
	defer release()
	credentialID := e.credentialID() // as sent: see Cache.fetch
	fetched, err := e.c.callFetch(ctx, call.exchange, "token exchange function panicked", e.opts.Name)
	now := e.c.now()
	if err == nil {
		// Recorded with its JWT exp, as the store's readers check.
		fetched.ExpiresAt = fetched.ExpiresAt.UTC().Truncate(time.Millisecond)
		if tok, perr := jws.Parse(fetched.AccessToken); perr == nil {
			if exp, ok := tok.Time("exp"); ok {
				fetched.ExpiresAt = exp.UTC()
			}
		}
		err = e.c.checkFetched(fetched.AccessToken, fetched.ExpiresAt, now)
	}
	if err != nil {
		return e.failed(ctx, call, err, credentialID, now, write)
	}
	e.clearBackoff(call.tenant)
	stamp := now.UTC().Truncate(time.Millisecond)
	rec := &Record{ID: call.key, ApplicationName: e.opts.Name, AccessToken: fetched.AccessToken,
		AccessTokenExpiresAt: fetched.ExpiresAt, Scope: e.scope, CreatedAt: stamp, UpdatedAt: stamp}
	e.keep(call, rec)
	if ttl := minTime(rec.AccessTokenExpiresAt, call.notAfter).Sub(now); write && ttl > 0 {
		if err := e.c.store.Set(ctx, call.key, rec, ttl); err != nil && !errors.Is(err, ErrTooLarge) {
			e.c.storeFailed(err)
		}
	}
	return exchanged{rec, ExchangeExchanged}, nil
}

// failed turns an exchange's failure into its callers' *Error, with the
// result to report: a refusal of the user's token (ExchangeRejected) is
// remembered; our own cancellation is not; any other failure backs off the
// exchanges at call.tenant only, so that a token naming another tenant
// (anyone can write one) cannot pause the application's other users, in
// the store too if share and not permanent (a permanent one binds
// credentialID, the credential sent, which no other replica shares).
func (e *Exchanger) failed(ctx context.Context, call exchangeCall, err error, credentialID string, now time.Time, share bool) (exchanged, error) {
	wrapped := requestError(err, "exchanging a token for application %q: %v", e.opts.Name, err)
	if e.opts.Rejected != nil {
		if remember, ok := e.opts.Rejected(err); ok {
			if until := minTime(now.Add(remember), call.notAfter); remember > 0 && until.After(now) {
				e.rejected.put(call.d, error(wrapped), until)
			}
			wrapped.Permanent = true
			return exchanged{result: ExchangeRejected}, wrapped
		}
	}
	if ctx.Err() != nil || isLocalFailure(err) {
		return exchanged{result: ExchangeFailed}, wrapped
	}
	result, retryAfter := classify(err)
	e.mu.Lock()
	tb, known := e.backoffs[call.tenant]
	if !known {
		e.makeRoomForBackoff(now, credentialID)
	} else if !tb.appliesTo(credentialID) {
		tb.Attempts = 0 // another credential's failures
	}
	tb.Attempts++
	tb.Permanent, tb.CredentialID = result == FetchPermanent, credentialID
	tb.Until = now.Add(backoffDelay(tb.Attempts, tb.Permanent, retryAfter, e.c.random()))
	tb.Message = wrapped.Message
	tb.cause = err
	e.backoffs[call.tenant] = tb
	e.mu.Unlock()
	if shared := tb.Backoff; share && !shared.Permanent {
		shared.Message = truncate(shared.Message, maxBackoffMessage)
		shared.CredentialID = "" // binds no one once shared: a Redis reader learns nothing of it
		if err := e.c.store.SetBackoff(ctx, e.backoffKey(call.tenant), &shared, tb.Until.Sub(now)); err != nil {
			e.c.storeFailed(err)
		}
	}
	return exchanged{result: ExchangeFailed}, wrapped.paused(tb.Permanent, tb.Until.Sub(now))
}

// backoffKey is the store key of the fleet's backoff of the exchanges at
// tenant: an entry's of a "user token" no JWT can be.
func (e *Exchanger) backoffKey(tenant string) string {
	return BackoffKey(exchangeEntryKey(e.c.store.KeyPrefix(), e.namer.digest("\nbackoff "+tenant)))
}

// sharedBackoff adopts the fleet's backoff of the exchanges at tenant, if
// it ends later than this process's (or this process's is a permanent one
// of a credential no longer in use), and returns backedOff's error.
func (e *Exchanger) sharedBackoff(ctx context.Context, tenant string) error {
	if b := e.c.readSharedBackoff(ctx, e.backoffKey(tenant), e.opts.Name); b != nil {
		b.Permanent = false         // no replica shares one
		current := e.credentialID() // may read files: not under e.mu
		e.mu.Lock()
		// A permanent backoff of a credential no longer in use pauses no one.
		if tb, known := e.backoffs[tenant]; !tb.appliesTo(current) || b.Until.After(tb.Until) {
			mine := known && tb.appliesTo(current)
			if !known {
				e.makeRoomForBackoff(e.c.now(), current)
			}
			if mine {
				b.Attempts = max(b.Attempts, tb.Attempts)
			}
			e.backoffs[tenant] = tenantBackoff{Backoff: *b} // another replica's failure: no cause of ours
		}
		e.mu.Unlock()
	}
	return e.backedOff(tenant, e.c.now())
}

// tenantBackoff is the backoff of the exchanges at one tenant, with its cause.
type tenantBackoff struct {
	Backoff
	cause error
}

// makeRoomForBackoff keeps the backoffs within ExchangeOptions.Tenants
// before one is added: an ended one goes first, or a permanent one of
// another credential than credentialID (it pauses no one), else the one
// ending soonest. The caller holds e.mu.
func (e *Exchanger) makeRoomForBackoff(now time.Time, credentialID string) {
	for len(e.backoffs) >= e.opts.Tenants {
		victim, first := "", true
		for tenant, tb := range e.backoffs {
			if !now.Before(tb.Until) || !tb.appliesTo(credentialID) {
				victim = tenant
				break
			}
			if first || tb.Until.Before(e.backoffs[victim].Until) {
				victim, first = tenant, false
			}
		}
		delete(e.backoffs, victim)
	}
}

// backedOff returns the error of an exchange at tenant while its backoff
// runs at now and binds the credential in use, else nil.
func (e *Exchanger) backedOff(tenant string, now time.Time) error {
	e.mu.Lock()
	tb, ok := e.backoffs[tenant]
	e.mu.Unlock()
	if !ok || !now.Before(tb.Until) || (tb.Permanent && !tb.appliesTo(e.credentialID())) {
		return nil
	}
	msg := cmp.Or(tb.Message, fmt.Sprintf("exchanging a token for application %q failed", e.opts.Name))
	return pausedBy(tb.Backoff, tb.cause, msg+"; token exchanges", now)
}

// credentialID is the ExchangeOptions.CredentialIDFunc's, "" without one.
func (e *Exchanger) credentialID() string {
	if e.opts.CredentialIDFunc != nil {
		return e.opts.CredentialIDFunc()
	}
	return ""
}

func (e *Exchanger) clearBackoff(tenant string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.backoffs, tenant)
}

func (e *Exchanger) report(result ExchangeResult) {
	if e.opts.OnExchange != nil {
		e.opts.OnExchange(result)
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
