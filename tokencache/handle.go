package tokencache

import (
	"cmp"
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

// ErrClosed is the cause of Token's retryable error on a closed Cache.
var ErrClosed = errors.New("tokencache: cache closed")

// Handle is one registration of an application. It answers Token until
// Release and after it too (a token, or ErrClosed once the Cache is
// closed), so a caller racing a release needs no grace period. Handles of
// one record key (one application in the old and new config of a reload)
// share its record, refreshes and backoff; every fetch uses the newest live
// active handle's Fetch, credential, VerifyStored and OnFetch (else the
// newest pending one's), so no request of a reloaded config uses the old
// credential.
type Handle struct {
	c     *Cache
	app   Application
	ks    *keyState
	scope string
	seq   uint64 // registration order; names the refreshes made for it
	// pending: registered with RegisterPending and not yet activated.
	pending  atomic.Bool
	prefetch atomic.Bool // set by Prefetch: the key is kept warm (see Cache.warm)
	// l1 holds the record as this handle returns it (its own name and
	// scope), so a hit copies it out and nothing else.
	l1 atomic.Pointer[Record]
}

// keyState is what the handles of one record key share.
//
// Locking. The store keys never change. Cache.registerMu guards handles
// and stopWatch, and every write of a handle's l1 happens under it, so that
// fills and drops reach all the key's handles in one order; l1 is read
// without a lock. ks.mu guards the other plain fields; the atomics and
// flights lock themselves. The order is:
//
//	Cache.registerMu → ks.mu
//	Cache.registerMu → Cache.bgMu (Register starts the key's watcher)
//
// So a function holding ks.mu never takes registerMu (schedule asks warm
// before it locks ks.mu), and bgMu is taken under no lock but registerMu.
// Under neither registerMu nor ks.mu does anything call the store, a Fetch,
// CredentialIDFunc, OnFetch or OnStoreDrop, or wait for a flight; only the
// Clock's timers are armed and stopped under ks.mu.
type keyState struct {
	key, lockKey, backoffKey, channel string

	handles   []*Handle          // live, oldest first; registerMu
	stopWatch context.CancelFunc // ends the lasting subscription (see Cache.watch); registerMu
	flights   singleflight.Group // one refresh at a time per fetching handle

	mu        sync.Mutex
	current   *Record   // the record last put into L1 (as stored)
	refreshAt time.Time // when current is due (zero: from RefreshAhead)
	timer     Timer
	removed   bool // the last handle went: no more timers
	// failure is the in-process backoff, lastErr its cause (for errors.As).
	failure Backoff
	lastErr error
	// purged holds SHA-256 fingerprints of purged tokens until they expire,
	// dropped those of tokens dropped on a purge mark (see rememberDropped);
	// lastPurge rate-limits drops (see allowRefetch).
	purged    map[[32]byte]time.Time
	dropped   map[[32]byte]droppedToken
	lastPurge time.Time
	// source and nextRefresh (zero: no timer) are for Status; inStore is set
	// while the store holds current too (taken from it, or written to it).
	source      Source
	inStore     bool
	nextRefresh time.Time
	forced      forcedRefresh // the last Handle.Refresh, for coalescing
	changed     chan struct{} // the key's broadcast (see updated)
	announced   *Record       // what the last announcement carried
	// rejected fingerprints the last untrusted store token, so that polls
	// reading it again do not log it again; undecodable is set once a
	// record that does not decode was logged, until one is read trusted or
	// written.
	rejected    [32]byte
	undecodable atomic.Bool

	// unshared: this replica's own token proved unfit for the store (see
	// Cache.shareable), so the key is fetched without it. longestOwn (ns)
	// and ownRefused are about this replica's own tokens (see accept.go).
	unshared   atomic.Bool
	longestOwn atomic.Int64
	ownRefused atomic.Bool
}

// stopTimer stops the refresh timer, if any. The caller holds ks.mu.
func (ks *keyState) stopTimer() {
	if ks.timer != nil {
		ks.timer.Stop()
		ks.timer = nil
	}
	ks.nextRefresh = time.Time{}
}

// clearCurrent drops ks's current record, its timer and the L1 of every
// live handle. The caller holds Cache.registerMu and ks.mu.
func (ks *keyState) clearCurrent() {
	ks.current, ks.refreshAt, ks.source, ks.inStore = nil, time.Time{}, "", false
	ks.stopTimer()
	for _, h := range ks.handles {
		h.l1.Store(nil)
	}
}

// Register adds an application and returns its handle. Name and CacheKey
// must not be empty, Fetch not nil, and Scopes at least one, none empty or
// containing spaces. A handle of a key in use starts with the key's token
// and takes its refreshes over.
func (c *Cache) Register(app Application) (*Handle, error) {
	return c.register(app, false)
}

// RegisterPending is Register for a configuration that is not serving yet
// (it may still fail to load): the key's refreshes keep using the newest
// active handle until Activate (the newest pending one if none is active).
func (c *Cache) RegisterPending(app Application) (*Handle, error) {
	return c.register(app, true)
}

// Activate lets h take its key's refreshes over (see RegisterPending).
func (h *Handle) Activate() { h.pending.Store(false) }

// register checks app (see Register), keeping its own copy of the scopes,
// and adds its handle.
func (c *Cache) register(app Application, pending bool) (*Handle, error) {
	switch {
	case app.Name == "":
		return nil, errors.New("tokencache: registering application: empty name")
	case app.CacheKey == "":
		return nil, fmt.Errorf("tokencache: registering application %q: empty identity", app.Name)
	case app.Fetch == nil:
		return nil, fmt.Errorf("tokencache: registering application %q: nil fetch function", app.Name)
	case len(app.Scopes) == 0:
		return nil, fmt.Errorf("tokencache: registering application %q: no scopes", app.Name)
	}
	for _, s := range app.Scopes {
		if s == "" || strings.ContainsFunc(s, unicode.IsSpace) {
			return nil, fmt.Errorf("tokencache: registering application %q: scope %q is empty or contains whitespace", app.Name, s)
		}
	}
	app.Scopes = slices.Clone(app.Scopes)
	key := RecordKey(c.store.KeyPrefix(), app)
	c.registerMu.Lock()
	ks := c.keys[key]
	if ks == nil {
		ks = &keyState{key: key, lockKey: LockKey(key), backoffKey: BackoffKey(key),
			channel: UpdateChannel(key)}
		c.keys[key] = ks
		subscribed := c.watch(ks)
		defer func() { <-subscribed }() // announcements after Register reach the key
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

// Release ends the registration; the key's refreshes go on with the
// newest handle left, and stop with the last. The handle still answers
// (see Handle). Calls after the first do nothing.
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
// WaitTimeout. Errors are *Error (a Fetch's own *Error as it is): at once
// while the key is backed off (RetryAfter while throttled, else Permanent),
// after WaitTimeout or when ctx ends, and ErrClosed once the Cache is.
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

// newest returns the newest live handle of h's key, or h when none is.
func (c *Cache) newest(h *Handle) *Handle {
	return cmp.Or(c.newestOf(h.ks), h)
}

// newestOf returns the newest live active handle of ks, else its newest
// live pending one, nil if none.
func (c *Cache) newestOf(ks *keyState) *Handle {
	c.registerMu.Lock()
	defer c.registerMu.Unlock()
	for i := len(ks.handles) - 1; i >= 0; i-- {
		if !ks.handles[i].pending.Load() {
			return ks.handles[i]
		}
	}
	if len(ks.handles) == 0 {
		return nil
	}
	return ks.handles[len(ks.handles)-1]
}

// view returns rec with h's name and scope.
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
