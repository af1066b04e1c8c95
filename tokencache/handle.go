package tokencache

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/singleflight"
)

// ErrClosed is the cause of Token's retryable error (with RetryAfter) on a
// closed Cache.
var ErrClosed = errors.New("tokencache: cache closed")

// Handle is one registration of an application. It gets the application's
// tokens until Release and keeps answering after it (a token, or ErrClosed
// once the Cache is closed), so a caller racing a release needs no grace
// period. Handles with the same record key (one application in the old and
// new config of a reload) share its record, refreshes and backoff, and
// every fetch uses the newest live active handle's Fetch, credential,
// VerifyStored and OnFetch (else the newest pending one's): once a reloaded
// config starts, no token request uses the old credential.
type Handle struct {
	c     *Cache
	app   Application
	ks    *keyState
	scope string
	seq   uint64 // registration order; names the refreshes made for it
	// pending: registered with RegisterPending and not yet activated; it
	// does not take the key's refreshes over from an active handle.
	pending atomic.Bool
	// prefetch is set by Prefetch: the key is kept warm while this handle
	// is live (see Cache.warm).
	prefetch atomic.Bool
	// l1 holds the record as this handle returns it (its own
	// ApplicationName and Scope), so a hit copies it out and nothing else.
	l1 atomic.Pointer[Record]
}

// keyState is what the handles sharing one record key share: the record's
// keys, the current record, the refreshes in flight, the proactive refresh
// timer, the in-process backoff and the purge memory.
//
// Locking. The store keys never change. Cache.registerMu guards handles
// and stopWatch, and every write of a handle's L1 (Handle.l1) happens
// under it, so that a fill and a drop reach all the key's handles in one
// order; L1 is read without a lock. ks.mu guards current and everything
// about it (refreshAt, source, inStore, timer, nextRefresh, removed), the
// backoff (failure, lastErr), the purge memory (purged, lastPurge),
// forced, rejected and the broadcast (changed). unshared, longestOwn and ownRefused are atomics,
// and flights locks itself. The order is:
//
//	Cache.registerMu → ks.mu
//	Cache.registerMu → Cache.bgMu (Register starts the key's watcher)
//
// So a function holding ks.mu never takes registerMu (schedule asks warm
// before it locks ks.mu), and bgMu is taken with no other lock but
// registerMu. Under neither registerMu nor ks.mu does anything call the
// store, a Fetch, CredentialIDFunc, OnFetch or OnStoreDrop, or wait for a
// flight; only the Clock's timers are armed and stopped under ks.mu.
type keyState struct {
	key, lockKey, backoffKey, channel string

	// handles are the live handles of this key, oldest first. Guarded by
	// Cache.registerMu; empty once the last one is released.
	handles []*Handle
	// flights runs one refresh at a time per fetching handle.
	flights singleflight.Group

	mu sync.Mutex
	// current is the record last put into L1 (as stored).
	current *Record
	// refreshAt is when current is due for a background refresh (zero:
	// compute it from RefreshAhead).
	refreshAt time.Time
	timer     Timer
	// removed is set when the last handle goes: no more timers.
	removed bool
	// failure is the in-process backoff (zero Until when none), and
	// lastErr its cause, kept for errors.As by callers in this process.
	failure Backoff
	lastErr error
	// purged holds SHA-256 fingerprints of purged tokens until they expire;
	// lastPurge rate-limits PurgeRejected.
	purged    map[[32]byte]time.Time
	lastPurge time.Time

	// unshared is set once this replica's own token proved unfit for the
	// store (see Cache.shareable): from then on the key is fetched without
	// the store.
	unshared atomic.Bool
	// longestOwn is the longest lifetime of this replica's own tokens
	// (nanoseconds) and ownRefused is set once its own token failed the
	// token checks (see accept.go).
	longestOwn atomic.Int64
	ownRefused atomic.Bool
	// source is where current came from and nextRefresh when the armed
	// timer fires (zero: none), for Status. inStore is set while current
	// is also the store's record (taken from it, or fetched here and
	// written to it; not when fetched while the store was down or the key
	// is unshared). forced is the last forced refresh (Handle.Refresh), for
	// coalescing. Guarded by mu.
	source      Source
	inStore     bool
	nextRefresh time.Time
	forced      forcedRefresh
	// stopWatch ends the key's lasting subscription (see Cache.watch).
	// Guarded by Cache.registerMu.
	stopWatch context.CancelFunc
	// changed is the key's broadcast (see updated); announced is the
	// record its last announcement carried (see lastAnnounced).
	changed   chan struct{}
	announced *Record

	// rejected is the SHA-256 fingerprint of the last store record's token
	// that was not trusted, so that reading it again (a lock loser polls)
	// does not log it again. Guarded by mu.
	rejected [32]byte
}

func newKeyState(key string) *keyState {
	return &keyState{key: key, lockKey: LockKey(key), backoffKey: BackoffKey(key), channel: UpdateChannel(key)}
}

// stopTimer stops the proactive refresh timer, if any. The caller holds
// ks.mu.
func (ks *keyState) stopTimer() {
	if ks.timer != nil {
		ks.timer.Stop()
		ks.timer = nil
	}
	ks.nextRefresh = time.Time{}
}

// clearCurrent drops ks's current record (with its refresh point and
// source) and its proactive refresh timer; the handles' L1 is the caller's
// to clear. The caller holds ks.mu.
func (ks *keyState) clearCurrent() {
	ks.current, ks.refreshAt, ks.source, ks.inStore = nil, time.Time{}, "", false
	ks.stopTimer()
}

// validate checks app and returns it with its scopes copied.
func validate(app Application) (Application, error) {
	switch {
	case app.Name == "":
		return app, errors.New("tokencache: registering application: empty name")
	case app.CacheKey == "":
		return app, fmt.Errorf("tokencache: registering application %q: empty identity", app.Name)
	case app.Fetch == nil:
		return app, fmt.Errorf("tokencache: registering application %q: nil fetch function", app.Name)
	case len(app.Scopes) == 0:
		return app, fmt.Errorf("tokencache: registering application %q: no scopes", app.Name)
	}
	for _, s := range app.Scopes {
		if s == "" || strings.ContainsFunc(s, unicode.IsSpace) {
			return app, fmt.Errorf("tokencache: registering application %q: scope %q is empty or contains whitespace", app.Name, s)
		}
	}
	app.Scopes = slices.Clone(app.Scopes)
	return app, nil
}

// Register adds an application and returns its handle. Name and CacheKey
// must not be empty, Fetch not nil, and Scopes at least one, none empty or
// containing spaces. A handle of a key already in use starts with the
// key's current token; it becomes the one whose Fetch the key's refreshes
// use. It is safe to call concurrently with everything else.
func (c *Cache) Register(app Application) (*Handle, error) {
	return c.register(app, false)
}

// RegisterPending is Register for a configuration that is not serving yet
// (one being loaded, which may still fail): its handle answers Token like
// any other, but the key's refreshes keep using the newest active handle's
// Fetch and credential until Activate. A key with no active handle uses
// its newest pending one.
func (c *Cache) RegisterPending(app Application) (*Handle, error) {
	return c.register(app, true)
}

// Activate lets h take its key's refreshes over (see RegisterPending).
func (h *Handle) Activate() { h.pending.Store(false) }

func (c *Cache) register(app Application, pending bool) (*Handle, error) {
	app, err := validate(app)
	if err != nil {
		return nil, err
	}
	key := RecordKey(c.store.KeyPrefix(), app)
	c.registerMu.Lock()
	ks := c.keys[key]
	if ks == nil {
		ks = newKeyState(key)
		c.keys[key] = ks
		subscribed := c.watch(ks)
		// Announcements made once Register returns reach this key.
		defer func() { <-subscribed }()
	}
	defer c.registerMu.Unlock()
	c.seq++
	h := &Handle{c: c, app: app, ks: ks, scope: strings.Join(app.Scopes, " "), seq: c.seq}
	h.pending.Store(pending)
	if cur := ks.currentRecord(); cur != nil {
		h.l1.Store(h.view(cur))
	}
	ks.handles = append(ks.handles, h)
	return h, nil
}

// Release ends the registration. The key's refreshes go on with the newest
// active handle left (else the newest pending one); when none is left, the
// key's background refresh stops. The handle still answers Token and
// PurgeRejected afterwards (see Handle). Calls after the first do nothing.
func (h *Handle) Release() {
	c, ks := h.c, h.ks
	c.registerMu.Lock()
	defer c.registerMu.Unlock()
	i := slices.Index(ks.handles, h)
	if i < 0 {
		return
	}
	ks.handles = slices.Delete(ks.handles, i, i+1)
	if len(ks.handles) > 0 {
		return
	}
	delete(c.keys, ks.key)
	if ks.stopWatch != nil {
		ks.stopWatch()
	}
	ks.mu.Lock()
	ks.removed = true
	ks.stopTimer()
	ks.mu.Unlock()
}

// Token returns a token with more than RefreshWindow left: from L1 without
// I/O or locks, else from the store or a fetch, waiting at most
// WaitTimeout. Errors are *Error: at once while the key is backed off after
// a failure (with RetryAfter while throttled, Permanent after a permanent
// failure), after WaitTimeout or when ctx ends, and with RetryAfter (cause
// ErrClosed) once the Cache is closed.
// Errors a Fetch returns as *Error are returned as they are.
func (h *Handle) Token(ctx context.Context) (Record, error) {
	c := h.c
	if rec := h.l1.Load(); rec.validFor(c.now(), c.refreshWindow) {
		if ce := c.log().Check(zapcore.DebugLevel, "token cache hit"); ce != nil {
			ce.Write(zap.String("application", h.app.Name), zap.Time("expires_at", rec.AccessTokenExpiresAt))
		}
		return *rec, nil
	}
	return c.refresh(ctx, h)
}

// newest returns the newest live handle of h's key, or h when none is
// live (h was released, and its key is no longer in use).
func (c *Cache) newest(h *Handle) *Handle {
	if n := c.newestOf(h.ks); n != nil {
		return n
	}
	return h
}

// newestOf returns the newest live active handle of ks, else its newest
// live pending one, nil if none.
func (c *Cache) newestOf(ks *keyState) *Handle {
	c.registerMu.Lock()
	defer c.registerMu.Unlock()
	if len(ks.handles) == 0 {
		return nil
	}
	for i := len(ks.handles) - 1; i >= 0; i-- {
		if !ks.handles[i].pending.Load() {
			return ks.handles[i]
		}
	}
	return ks.handles[len(ks.handles)-1]
}

// view returns rec as h returns it: with h's name and scope.
func (h *Handle) view(rec *Record) *Record {
	cp := *rec
	cp.ApplicationName = h.app.Name
	cp.Scope = h.scope
	return &cp
}

// closedError answers a caller of h that needs a refresh from a closed Cache.
func closedError(h *Handle) *Error {
	return &Error{RetryAfter: time.Second, Err: ErrClosed, Message: fmt.Sprintf("no token for application %q: the token cache was closed (its configuration was replaced); retry the request", h.app.Name)}
}
