package tokencache

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/singleflight"
)

// Defaults of Options.
const (
	DefaultRefreshWindow = 60 * time.Second
	DefaultRefreshAhead  = 0.5
	DefaultLockTTL       = 15 * time.Second
	DefaultWaitTimeout   = 5 * time.Second
	DefaultPollInterval  = 250 * time.Millisecond
	DefaultPurgeInterval = 10 * time.Second
)

// Options configures a Cache.
type Options struct {
	// Store is the shared level. Default: a MemoryStore on the Cache's
	// clock. Record keys get the store's KeyPrefix() if it has that method
	// (RedisStore does), else DefaultKeyPrefix.
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
	// gets an *Error (CodeTokenRequestFailed) while the refresh goes on in
	// the background. Default 5s.
	WaitTimeout time.Duration
	// PollInterval is how often a replica that lost the refresh lock reads
	// the store, as a fallback to the winner's pub/sub announcement.
	// Default 250ms.
	PollInterval time.Duration
	// PurgeInterval is the least time between two Purges of one record key.
	// Default 10s.
	PurgeInterval time.Duration
	// Logger receives warnings when the store fails and recovers, and an
	// info line per fetch. Tokens are never logged. Default zap.NewNop().
	Logger *zap.Logger
	// Clock judges token expiry and backoff and runs the timers of
	// proactive refresh, background retries and lock extension (a fake
	// clock in tests). Default: the system clock.
	Clock Clock
	// Now, if set, overrides Clock.Now for judging expiry (kept for
	// compatibility; timers then still run on Clock, by default real
	// time). Default Clock.Now.
	Now func() time.Time
}

// Application is one configured application name.
type Application struct {
	// Name is the unique key the application is registered under, and the
	// name given to Token, Purge and Unregister, e.g. "graph-api" (or an
	// internal name such as "graph-api#7" when Label is set).
	Name string
	// Label is the application name shown in records
	// (ClientCredential.ApplicationName, also in the store), in error
	// messages and in logs. Default (empty): Name. It lets a caller register
	// several generations of one configured application under distinct
	// Names that all show as the same application.
	Label string
	// CredentialID is an opaque fingerprint of the credential Fetch uses
	// (computed by the caller; never the secret itself), or empty. A
	// permanent failure that another replica shared through the store is
	// obeyed only by applications with the same CredentialID, so that
	// replicas already holding a rotated credential are not paused by those
	// still holding the old one.
	CredentialID string
	// CredentialIDFunc, when set, is called instead of reading CredentialID,
	// for a credential that changes while the application is registered (a
	// certificate rotated on disk). It runs on the refresh path only, never
	// on a cache hit.
	CredentialIDFunc func() string
	// Identity is what makes a token distinct besides scopes, e.g. token
	// endpoint + "\n" + tenant + "\n" + client ID. It must not be empty.
	Identity string
	// Scopes are the requested scopes, e.g. "https://graph.microsoft.com/.default".
	Scopes []string
	// Fetch requests a new token.
	Fetch FetchFunc
	// VerifyStored, when set, checks that a record read from the store
	// belongs to this application's identity before it is used (the caller
	// knows what its tokens look like; the cache does not). It returns nil
	// for a record that does, an error wrapping ErrUnverifiable when that
	// cannot be told (an opaque token), and any other error for a record
	// that belongs to another identity. A mismatch is a miss, logged as
	// possible tampering. An unverifiable record is used only from a store
	// that authenticates its records (see Authenticator); and when this
	// replica's own fetched token is unverifiable (or does not match) on a
	// store that does not, it fetches on its own, without the store. Its
	// errors must not contain the token. It runs on the refresh path only.
	// Default nil: records are used as read.
	VerifyStored func(rec ClientCredential) error
}

// Cache hands out tokens per application name. It is safe for concurrent use.
type Cache struct {
	store         Store
	keyPrefix     string
	refreshWindow time.Duration
	refreshAhead  float64
	lockTTL       time.Duration
	waitTimeout   time.Duration
	pollInterval  time.Duration
	purgeInterval time.Duration
	// logger is swapped by SetLogger; read it with log().
	logger atomic.Pointer[zap.Logger]
	clock  Clock
	now    func() time.Time
	// random returns a number in [0, 1) for jitter (tests replace it).
	random func() float64

	// apps is replaced, never modified, by Register, Upsert and
	// Unregister (copy on write), so Token reads it without a lock.
	apps       atomic.Pointer[map[string]*entry]
	registerMu sync.Mutex
	// keys holds the state of each record key in use, shared by the
	// entries with that key. Guarded by registerMu.
	keys map[string]*keyState

	flights singleflight.Group
	// storeDown is set while the store fails, so that an outage is
	// logged once and its end once.
	storeDown atomic.Bool
	// storeAuthenticates: only trusted writers can put a record in the
	// store (see Authenticator).
	storeAuthenticates bool

	// closing ends with Close: it cancels refreshes and stops timers.
	closing   context.Context
	close     context.CancelFunc
	closeOnce sync.Once
	// background counts running background refreshes, for Close to wait.
	background sync.WaitGroup
	bgMu       sync.Mutex // guards closed against background.Add
	closed     bool

	// Test hooks, nil in production.
	beforeFlight      func(key string)                // a caller is about to join or start a refresh
	afterBackground   func(key string, err error)     // a background refresh ended
	onLockExtended    func(key string, extended bool) // an extension of the refresh lock was tried
	onAwaitWake       func(key string, notified bool) // a lock loser woke (notified: by pub/sub)
	onFetchInProgress func(key string)                // the lock holder is about to call Fetch
}

// entry is one application name: its L1 and its definition.
type entry struct {
	app   Application
	ks    *keyState
	scope string
	// l1 holds the record as this application returns it (its own
	// ApplicationName and Scope), so a hit copies it out and nothing else.
	l1 atomic.Pointer[ClientCredential]
}

// New returns a Cache with opts, defaults filled in.
func New(opts Options) (*Cache, error) {
	if opts.RefreshWindow < 0 || opts.LockTTL < 0 || opts.WaitTimeout < 0 || opts.PollInterval < 0 || opts.PurgeInterval < 0 {
		return nil, errors.New("tokencache: durations must not be negative")
	}
	if opts.RefreshAhead < 0 || opts.RefreshAhead >= 1 {
		return nil, fmt.Errorf("tokencache: refresh ahead %v is not between 0 and 1", opts.RefreshAhead)
	}
	c := &Cache{
		store:         opts.Store,
		refreshWindow: orDefault(opts.RefreshWindow, DefaultRefreshWindow),
		refreshAhead:  opts.RefreshAhead,
		lockTTL:       orDefault(opts.LockTTL, DefaultLockTTL),
		waitTimeout:   orDefault(opts.WaitTimeout, DefaultWaitTimeout),
		pollInterval:  orDefault(opts.PollInterval, DefaultPollInterval),
		purgeInterval: orDefault(opts.PurgeInterval, DefaultPurgeInterval),
		clock:         opts.Clock,
		now:           opts.Now,
		random:        rand.Float64,
		keys:          make(map[string]*keyState),
	}
	if c.refreshAhead == 0 {
		c.refreshAhead = DefaultRefreshAhead
	}
	c.SetLogger(opts.Logger)
	if c.clock == nil {
		now := c.now
		if now == nil {
			now = time.Now
		}
		c.clock = systemClock{now: now}
	}
	if c.now == nil {
		c.now = c.clock.Now
	}
	if c.store == nil {
		c.store = newMemoryStore(c.now)
	}
	if a, ok := c.store.(Authenticator); ok {
		c.storeAuthenticates = a.Authenticates()
	}
	c.keyPrefix = DefaultKeyPrefix
	if p, ok := c.store.(interface{ KeyPrefix() string }); ok {
		c.keyPrefix = p.KeyPrefix()
	}
	c.closing, c.close = context.WithCancel(context.Background())
	c.apps.Store(&map[string]*entry{})
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

// label returns the application name shown in records, errors and logs:
// Label, else Name.
func (a *Application) label() string {
	if a.Label != "" {
		return a.Label
	}
	return a.Name
}

// orDefault returns d, or def if d is zero.
func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Token returns a token for the application with more than RefreshWindow
// left: from L1 without I/O or locks, else from the store or a fetch,
// waiting at most WaitTimeout. Errors are *Error: CodeApplicationNotFound
// for a name not registered (without I/O); CodeTokenRequestFailed when no
// valid token could be had — at once while the key is backed off after a
// failure (Status 503 with RetryAfter while throttled, 502 after a
// permanent failure), after WaitTimeout or when ctx ends. Errors a Fetch
// returns as *Error are returned as they are.
func (c *Cache) Token(ctx context.Context, applicationName string) (ClientCredential, error) {
	e := (*c.apps.Load())[applicationName]
	if e == nil {
		return ClientCredential{}, NewError(CodeApplicationNotFound,
			fmt.Sprintf("application %q is not configured", applicationName), nil)
	}
	if rec := e.l1.Load(); rec.validFor(c.now(), c.refreshWindow) {
		if ce := c.log().Check(zapcore.DebugLevel, "token cache hit"); ce != nil {
			ce.Write(zap.String("application", e.app.label()), zap.Time("expires_at", rec.AccessTokenExpiresAt))
		}
		return *rec, nil
	}
	return c.refresh(ctx, e)
}

// Close stops background refreshes (cancelling any in flight and waiting
// for them) and closes the store. Token keeps working afterwards, without
// background refresh, on a closed store (so fetching on its own). Calls
// after the first do nothing and return nil.
func (c *Cache) Close() error {
	var err error
	c.closeOnce.Do(func() {
		c.bgMu.Lock()
		c.closed = true
		c.bgMu.Unlock()
		c.close()
		c.registerMu.Lock()
		for _, ks := range c.keys {
			ks.stopTimer()
		}
		c.registerMu.Unlock()
		c.background.Wait()
		err = c.store.Close()
	})
	return err
}

// credentialID is the application's current credential fingerprint.
func (a *Application) credentialID() string {
	if a.CredentialIDFunc != nil {
		return a.CredentialIDFunc()
	}
	return a.CredentialID
}
