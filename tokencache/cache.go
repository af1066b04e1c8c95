package tokencache

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Defaults of Options.
const (
	DefaultRefreshWindow  = 60 * time.Second
	DefaultRefreshAhead   = 0.5
	DefaultLockTTL        = 15 * time.Second
	DefaultWaitTimeout    = 5 * time.Second
	DefaultPollInterval   = 250 * time.Millisecond
	DefaultPurgeInterval  = 10 * time.Second
	DefaultPrefetchSpread = 2 * time.Second
)

// Options configures a Cache.
type Options struct {
	// Store is the shared level. Default: a MemoryStore on the Cache's
	// clock. Record keys get the store's KeyPrefix.
	Store Store
	// RefreshWindow: a token is used only while more than this is left
	// before it expires, and a fetched token with less is rejected.
	// Default 60s.
	RefreshWindow time.Duration
	// RefreshAhead is the point of a token's lifetime, as a fraction
	// between 0 and 1, at which it is refreshed in the background when the
	// token endpoint gave no refresh_in (Fetched.RefreshIn): 0.5 refreshes
	// a one-hour token after 30 minutes. The point is moved by up to ±10%
	// of the time left until it (at most ±5 minutes) so that replicas do not
	// all try at once, and is never later than RefreshWindow before expiry.
	// Default 0.5 (half the lifetime).
	RefreshAhead float64
	// LockTTL is how long a replica's refresh lock lasts unless extended:
	// its holder extends it every LockTTL/3 while its fetch runs, so a
	// holder that dies frees it within LockTTL. A fetch may take at most
	// 2×LockTTL. Default 15s.
	LockTTL time.Duration
	// WaitTimeout is the longest a Token call waits for a token when none
	// is usable (none in L1 with more than RefreshWindow left); it then
	// gets an *Error while the refresh goes on in
	// the background. Default 5s.
	WaitTimeout time.Duration
	// PollInterval is how long a replica that lost the refresh lock waits
	// before it reads the store, as a fallback to the winner's pub/sub
	// announcement; each later poll waits twice as long as the one before,
	// up to LockTTL/3. Default 250ms.
	PollInterval time.Duration
	// PurgeInterval is the least time between two Purges of one record key.
	// Default 10s.
	PurgeInterval time.Duration
	// FetchConcurrency bounds the token requests (Fetch calls) this Cache
	// makes at once; background refreshes (prefetch included) use at most
	// half, so that a request waiting for a token is not queued behind a
	// warm-up. Default DefaultFetchConcurrency (16).
	FetchConcurrency int
	// PrefetchSpread spreads the first refreshes of Handle.Prefetch over
	// this long (each starts at a random point in it), so that replicas
	// started together do not all reach the store and the lock of every
	// key in the same instant. Default DefaultPrefetchSpread (2s); negative
	// for none.
	PrefetchSpread time.Duration
	// Logger receives warnings when the store fails and recovers, and an
	// info line per fetch. Tokens are never logged. Default zap.NewNop().
	Logger *zap.Logger
	// Clock judges token expiry and backoff and runs the timers of
	// proactive refresh, background retries and lock extension (a fake
	// clock in tests). Default: the system clock.
	Clock Clock
}

// Application is one configured application name, registered with
// Cache.Register.
type Application struct {
	// Name is the application's name, e.g. "graph-api": shown in records
	// (Record.ApplicationName, also in the store), in error
	// messages and in logs. It need not be unique: an old and a new config
	// may both register "graph-api" during a reload.
	Name string
	// CredentialIDFunc, when set, returns an opaque fingerprint of the
	// credential Fetch uses at the moment (computed by the caller; never the
	// secret itself). A permanent failure that another replica shared
	// through the store is obeyed only by applications with the same
	// fingerprint, so that replicas already holding a rotated credential (a
	// new secret, a certificate renewed on disk) are not paused by those
	// still holding the old one. It runs on the refresh path only, never on
	// a cache hit. Default nil: the empty fingerprint.
	CredentialIDFunc func() string
	// CacheKey is what makes a token distinct besides scopes (whose tokens
	// these are), e.g. token endpoint + "\n" + tenant + "\n" + client ID
	// (entra.Client.CacheKey); the record key hashes it with the scopes
	// (RecordKey). It must not be empty.
	CacheKey string
	// Scopes are the requested scopes, e.g. "https://graph.microsoft.com/.default".
	Scopes []string
	// Fetch requests a new token. Its errors may implement FetchError to
	// tell the cache how to retry.
	Fetch FetchFunc
	// OnFetch, when set, is told the outcome of each call of Fetch that
	// this application's handle made (see FetchOutcome), after the cache
	// classified it: for metrics and logs. It runs on the refresh path, in
	// the refreshing goroutine, and must not block.
	OnFetch func(FetchOutcome)
	// OnStoreDrop, when set, is told each time the store asked this
	// process to drop the key's token (its record deleted and announced,
	// as a purge on another replica does): dropped is false when the token
	// was kept because one was dropped or purged less than PurgeInterval
	// ago. It must not block.
	OnStoreDrop func(dropped bool)
	// VerifyStored, when set, checks that a record read from the store
	// belongs to this application's identity before it is used (the caller
	// knows what its tokens look like; the cache does not). It returns nil
	// for a record that does, an error wrapping ErrUnverifiable when that
	// cannot be told (an opaque token), and any other error for a record
	// that belongs to another identity. A mismatch is a miss, logged as
	// possible tampering. An unverifiable record is used only from a store
	// that authenticates its records (see Store.Authenticates); and when this
	// replica's own fetched token is unverifiable (or does not match) on a
	// store that does not, it fetches on its own, without the store. Its
	// errors must not contain the token. It runs on the refresh path only.
	// Default nil: records are used as read.
	VerifyStored func(rec Record) error
}

// Cache hands out tokens to the applications registered with it, through
// their Handles. It is safe for concurrent use.
type Cache struct {
	store         Store
	refreshWindow time.Duration
	refreshAhead  float64
	lockTTL       time.Duration
	waitTimeout   time.Duration
	pollInterval  time.Duration
	purgeInterval time.Duration
	// logger is swapped by SetLogger; read it with log().
	logger atomic.Pointer[zap.Logger]
	clock  Clock
	// random returns a number in [0, 1) for jitter (tests replace it).
	random func() float64
	// fetchSlots bounds concurrent token requests.
	fetchSlots     *fetchSlots
	prefetchSpread time.Duration

	// registerMu guards keys, the handles of every keyState and seq.
	registerMu sync.Mutex
	// keys holds the state of each record key in use, shared by the
	// handles with that key.
	keys map[string]*keyState
	// seq numbers handles in registration order.
	seq uint64
	// storeDown is set while the store fails, so that an outage is
	// logged once and its end once.
	storeDown atomic.Bool

	// closing is the one signal that Close has begun: it ends with Close,
	// which cancels refreshes and stops timers (see isClosed).
	closing   context.Context
	close     context.CancelFunc
	closeOnce sync.Once
	// background counts running background goroutines (refreshes and
	// watchers), for Close to wait; bgMu orders background.Add before
	// Close's cancel (see startBackground).
	background sync.WaitGroup
	bgMu       sync.Mutex

	hooks *testHooks
}

// New returns a Cache with opts, defaults filled in.
func New(opts Options) (*Cache, error) {
	if opts.RefreshWindow < 0 || opts.LockTTL < 0 || opts.WaitTimeout < 0 || opts.PollInterval < 0 || opts.PurgeInterval < 0 {
		return nil, errors.New("tokencache: durations must not be negative")
	}
	if opts.FetchConcurrency < 0 {
		return nil, errors.New("tokencache: fetch concurrency must not be negative")
	}
	if opts.RefreshAhead < 0 || opts.RefreshAhead >= 1 {
		return nil, fmt.Errorf("tokencache: refresh ahead %v is not between 0 and 1", opts.RefreshAhead)
	}
	c := &Cache{
		store:          opts.Store,
		refreshWindow:  cmp.Or(opts.RefreshWindow, DefaultRefreshWindow),
		refreshAhead:   cmp.Or(opts.RefreshAhead, DefaultRefreshAhead),
		lockTTL:        cmp.Or(opts.LockTTL, DefaultLockTTL),
		waitTimeout:    cmp.Or(opts.WaitTimeout, DefaultWaitTimeout),
		pollInterval:   cmp.Or(opts.PollInterval, DefaultPollInterval),
		purgeInterval:  cmp.Or(opts.PurgeInterval, DefaultPurgeInterval),
		clock:          opts.Clock,
		random:         rand.Float64,
		keys:           make(map[string]*keyState),
		hooks:          &testHooks{},
		fetchSlots:     newFetchSlots(cmp.Or(opts.FetchConcurrency, DefaultFetchConcurrency)),
		prefetchSpread: max(cmp.Or(opts.PrefetchSpread, DefaultPrefetchSpread), 0),
	}
	c.SetLogger(opts.Logger)
	if c.clock == nil {
		c.clock = systemClock{}
	}
	if c.store == nil {
		c.store = newMemoryStore(c.clock.Now)
	}
	c.closing, c.close = context.WithCancel(context.Background())
	return c, nil
}

// SetLogger replaces the logger (nil: a no-op logger). It is safe to call
// concurrently with everything else: a Cache outliving a config reload is
// given the new config's logger, as the old one's writers get closed.
func (c *Cache) SetLogger(l *zap.Logger) {
	if l == nil {
		l = zap.NewNop()
	}
	c.logger.Store(l)
}

// log returns the current logger.
func (c *Cache) log() *zap.Logger { return c.logger.Load() }

// now is the time by the Cache's clock.
func (c *Cache) now() time.Time { return c.clock.Now() }

// Close stops background refreshes (cancelling any in flight and waiting
// for them) and closes the store. Afterwards a Handle's Token still returns
// a valid token from its L1, and otherwise ErrClosed as a retryable *Error
// (with RetryAfter), as does a call that was waiting for a refresh.
// Calls after the first do nothing and return nil.
func (c *Cache) Close() error {
	var err error
	c.closeOnce.Do(func() {
		c.bgMu.Lock()
		c.close()
		c.bgMu.Unlock()
		c.registerMu.Lock()
		for _, ks := range c.keys {
			ks.mu.Lock()
			ks.stopTimer()
			ks.mu.Unlock()
		}
		c.registerMu.Unlock()
		c.background.Wait()
		err = c.store.Close()
	})
	return err
}

// isClosed reports whether Close has begun.
func (c *Cache) isClosed() bool { return c.closing.Err() != nil }

// startBackground counts one more background goroutine for Close to wait
// for, unless Close has begun (false: start none). The goroutine calls
// c.background.Done when it ends.
func (c *Cache) startBackground() bool {
	c.bgMu.Lock()
	defer c.bgMu.Unlock()
	if c.isClosed() {
		return false
	}
	c.background.Add(1)
	return true
}

// credentialID is the application's current credential fingerprint.
func (a *Application) credentialID() string {
	if a.CredentialIDFunc != nil {
		return a.CredentialIDFunc()
	}
	return ""
}
