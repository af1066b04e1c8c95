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
	// Store is the shared level. Default: a MemoryStore on the Cache's clock.
	Store Store
	// RefreshWindow: a token is used only while more than this is left, and
	// a fetched token with less is rejected. Default 60s.
	RefreshWindow time.Duration
	// RefreshAhead is the fraction of a token's lifetime after which it is
	// refreshed in the background when the endpoint gave no refresh_in,
	// moved by up to ±10% of the time left (at most ±5 minutes) so that
	// replicas do not all try at once. Default 0.5.
	RefreshAhead float64
	// LockTTL is how long a refresh lock lasts unless extended (every
	// LockTTL/3 while the fetch runs; a fetch takes at most 2×LockTTL), so
	// a holder that dies frees it within LockTTL; an on-behalf-of exchange
	// lock lasts LockTTL/10. Replicas sharing a store use the same one: a
	// lock with over three times its length left is taken over as a Redis
	// writer's. Default 15s.
	LockTTL time.Duration
	// WaitTimeout is the longest a Token call waits when no token is usable;
	// it then gets an *Error while the refresh goes on. Default 5s.
	WaitTimeout time.Duration
	// PollInterval is a lock loser's first wait before it reads the store,
	// as a fallback to pub/sub; each later poll waits twice as long, up to
	// LockTTL/3. Default 250ms.
	PollInterval time.Duration
	// PurgeInterval is the least time between two Purges of one record key.
	// Default 10s.
	PurgeInterval time.Duration
	// FetchConcurrency bounds the token requests made at once; background
	// refreshes use at most half, so a waiting request is not queued behind
	// a warm-up. Default DefaultFetchConcurrency (16).
	FetchConcurrency int
	// PrefetchSpread spreads Handle.Prefetch's first refreshes over this
	// long, so replicas started together do not hit the store at once.
	// Default DefaultPrefetchSpread (2s); negative for none.
	PrefetchSpread time.Duration
	// Logger receives store outages and an info line per fetch, never a
	// token. Default zap.NewNop().
	Logger *zap.Logger
	// Clock judges expiry and backoff and runs the refresh, retry and lock
	// timers (a fake clock in tests). Default: the system clock.
	Clock Clock
}

// Application is one configured application name, registered with
// Cache.Register.
type Application struct {
	// Name is shown in records, errors and logs, e.g. "graph-api". It need
	// not be unique: an old and a new config may both register it.
	Name string
	// CredentialIDFunc, when set, returns an opaque fingerprint (never the
	// secret) of the credential Fetch uses now. A permanent failure shared
	// through the store binds only the same fingerprint, so replicas with a
	// rotated credential are not paused by those with the old one. It runs
	// on the refresh path only. Default nil: the empty fingerprint.
	CredentialIDFunc func() string
	// CacheKey is what makes a token distinct besides scopes (whose tokens
	// these are), e.g. entra.Client.CacheKey; RecordKey hashes it with the
	// scopes. It must not be empty.
	CacheKey string
	// Scopes are the requested scopes, e.g. "https://graph.microsoft.com/.default".
	Scopes []string
	// Fetch requests a new token. Its errors may implement FetchError.
	Fetch FetchFunc
	// OnFetch, when set, is told the classified outcome of each Fetch call
	// of this handle, for metrics and logs. It must not block.
	OnFetch func(FetchOutcome)
	// OnStoreDrop, when set, is told each time the store asked this process
	// to drop the key's token (a purge on another replica): dropped is false
	// when it was kept because of PurgeInterval. It must not block.
	OnStoreDrop func(dropped bool)
	// VerifyStored, when set, checks that a record read from the store
	// belongs to this application's identity: nil if it does, an error
	// wrapping ErrUnverifiable when that cannot be told (an opaque token),
	// another error otherwise (a miss, logged as possible tampering). An
	// unverifiable record is used only from a store that authenticates
	// records; when this replica's own token fails it on a store that does
	// not, the key is fetched without the store. Its errors must not contain
	// the token. Default nil: records are used as read.
	VerifyStored func(rec Record) error
}

// Cache hands out tokens to the applications registered with it, through
// their Handles. It is safe for concurrent use.
type Cache struct {
	store          Store
	inMemory       bool // the store is a MemoryStore: nothing is shared beyond the process
	refreshWindow  time.Duration
	refreshAhead   float64
	lockTTL        time.Duration
	waitTimeout    time.Duration
	pollInterval   time.Duration
	purgeInterval  time.Duration
	logger         atomic.Pointer[zap.Logger] // swapped by SetLogger; read with log()
	clock          Clock
	random         func() float64 // in [0, 1), for jitter (tests replace it)
	fetchSlots     *fetchSlots
	prefetchSpread time.Duration

	registerMu sync.Mutex // guards keys, each keyState's handles, and seq
	keys       map[string]*keyState
	seq        uint64      // numbers handles in registration order
	storeDown  atomic.Bool // an outage is logged once, and its end once
	// tamperedBackoffs holds when a backoff key's value was last warned of
	// as possible tampering, until one there reads within bounds: repeats
	// within the hour are logged at debug, so a Redis writer does not set
	// the warnings' rate.
	tamperedBackoffs sync.Map

	// closing ends when Close begins, cancelling refreshes and timers.
	closing   context.Context
	close     context.CancelFunc
	closeOnce sync.Once
	// background counts background goroutines for Close to wait; bgMu
	// orders background.Add before Close's cancel (see startBackground).
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
		clock:          cmp.Or[Clock](opts.Clock, systemClock{}),
		random:         rand.Float64,
		keys:           make(map[string]*keyState),
		hooks:          &testHooks{},
		fetchSlots:     newFetchSlots(cmp.Or(opts.FetchConcurrency, DefaultFetchConcurrency)),
		prefetchSpread: max(cmp.Or(opts.PrefetchSpread, DefaultPrefetchSpread), 0),
	}
	c.SetLogger(opts.Logger)
	if c.store == nil {
		c.store = newMemoryStore(c.clock.Now)
	}
	_, c.inMemory = c.store.(*MemoryStore)
	c.closing, c.close = context.WithCancel(context.Background())
	return c, nil
}

// SetLogger replaces the logger (nil: a no-op logger), safely at any time:
// a Cache outliving a config reload gets the new config's logger.
func (c *Cache) SetLogger(l *zap.Logger) {
	if l == nil {
		l = zap.NewNop()
	}
	c.logger.Store(l)
}

func (c *Cache) log() *zap.Logger { return c.logger.Load() }

func (c *Cache) now() time.Time { return c.clock.Now() }

// Close cancels background refreshes, waits for them and closes the store.
// Afterwards Token returns a valid token from L1, else a retryable *Error
// with ErrClosed. Calls after the first do nothing.
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
// for (which calls c.background.Done), unless Close has begun (false).
func (c *Cache) startBackground() bool {
	c.bgMu.Lock()
	defer c.bgMu.Unlock()
	if c.isClosed() {
		return false
	}
	c.background.Add(1)
	return true
}

func (a *Application) credentialID() string {
	if a.CredentialIDFunc != nil {
		return a.CredentialIDFunc()
	}
	return ""
}
