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

// Defaults of Options.
const (
	DefaultRefreshWindow = 60 * time.Second
	DefaultLockTTL       = 15 * time.Second
	DefaultWaitTimeout   = 5 * time.Second
	DefaultPollInterval  = 50 * time.Millisecond
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
	// LockTTL is how long a replica's refresh lock lasts, and so the most a
	// fetch may take. Default 15s.
	LockTTL time.Duration
	// WaitTimeout is how long a replica that lost the refresh lock waits for
	// the winner's record before it fetches on its own. Default 5s.
	WaitTimeout time.Duration
	// PollInterval is how often a lock loser reads the store. Default 50ms.
	PollInterval time.Duration
	// Logger receives warnings when the store fails and recovers, and an
	// info line per fetch. Tokens are never logged. Default zap.NewNop().
	Logger *zap.Logger
	// Now is the clock that judges token expiry (a fake clock in tests).
	// Waiting for another replica (WaitTimeout, PollInterval) and the
	// store's own TTLs use real time. Default time.Now.
	Now func() time.Time
}

// Application is one configured application name.
type Application struct {
	// Name is the label routes use, e.g. "graph-api".
	Name string
	// Identity is what makes a token distinct besides scopes, e.g. token
	// endpoint + "\n" + tenant + "\n" + client ID. It must not be empty.
	Identity string
	// Scopes are the requested scopes, e.g. "https://graph.microsoft.com/.default".
	Scopes []string
	// Fetch requests a new token.
	Fetch FetchFunc
}

// Cache hands out tokens per application name. It is safe for concurrent use.
type Cache struct {
	store         Store
	keyPrefix     string
	refreshWindow time.Duration
	lockTTL       time.Duration
	waitTimeout   time.Duration
	pollInterval  time.Duration
	logger        *zap.Logger
	now           func() time.Time

	// apps is replaced, never modified, by Register (copy on write), so
	// Token reads it without a lock.
	apps       atomic.Pointer[map[string]*entry]
	registerMu sync.Mutex
	// byKey lists the entries sharing a record key, to fill all their L1s
	// from one refresh. Guarded by registerMu.
	byKey map[string][]*entry

	flights singleflight.Group
	// storeDown is set while the store fails, so that an outage is
	// logged once and its end once.
	storeDown atomic.Bool

	// beforeFlight, if set (tests only), runs when a caller is about to
	// join or start a refresh.
	beforeFlight func(key string)
}

// entry is one application: its L1 and what a refresh needs.
type entry struct {
	app     Application
	key     string
	lockKey string
	scope   string
	// l1 holds the record as this application returns it (its own
	// ApplicationName and Scope), so a hit copies it out and nothing else.
	l1 atomic.Pointer[ClientCredential]
}

// New returns a Cache with opts, defaults filled in.
func New(opts Options) (*Cache, error) {
	if opts.RefreshWindow < 0 || opts.LockTTL < 0 || opts.WaitTimeout < 0 || opts.PollInterval < 0 {
		return nil, errors.New("tokencache: durations must not be negative")
	}
	c := &Cache{
		store:         opts.Store,
		refreshWindow: orDefault(opts.RefreshWindow, DefaultRefreshWindow),
		lockTTL:       orDefault(opts.LockTTL, DefaultLockTTL),
		waitTimeout:   orDefault(opts.WaitTimeout, DefaultWaitTimeout),
		pollInterval:  orDefault(opts.PollInterval, DefaultPollInterval),
		logger:        opts.Logger,
		now:           opts.Now,
		byKey:         make(map[string][]*entry),
	}
	if c.logger == nil {
		c.logger = zap.NewNop()
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.store == nil {
		c.store = newMemoryStore(c.now)
	}
	c.keyPrefix = DefaultKeyPrefix
	if p, ok := c.store.(interface{ KeyPrefix() string }); ok {
		c.keyPrefix = p.KeyPrefix()
	}
	c.apps.Store(&map[string]*entry{})
	return c, nil
}

// orDefault returns d, or def if d is zero.
func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Register adds an application. Call it before the application's first
// Token. The name must be new and not empty, Identity not empty, Fetch not
// nil, and Scopes at least one, none empty or containing spaces.
func (c *Cache) Register(app Application) error {
	switch {
	case app.Name == "":
		return errors.New("tokencache: registering application: empty name")
	case app.Identity == "":
		return fmt.Errorf("tokencache: registering application %q: empty identity", app.Name)
	case app.Fetch == nil:
		return fmt.Errorf("tokencache: registering application %q: nil fetch function", app.Name)
	case len(app.Scopes) == 0:
		return fmt.Errorf("tokencache: registering application %q: no scopes", app.Name)
	}
	for _, s := range app.Scopes {
		if s == "" || strings.ContainsFunc(s, unicode.IsSpace) {
			return fmt.Errorf("tokencache: registering application %q: scope %q is empty or contains whitespace", app.Name, s)
		}
	}
	app.Scopes = slices.Clone(app.Scopes)
	key := RecordKey(c.keyPrefix, app)
	e := &entry{app: app, key: key, lockKey: LockKey(key), scope: strings.Join(app.Scopes, " ")}

	c.registerMu.Lock()
	defer c.registerMu.Unlock()
	old := *c.apps.Load()
	if _, dup := old[app.Name]; dup {
		return fmt.Errorf("tokencache: registering application %q: already registered", app.Name)
	}
	apps := make(map[string]*entry, len(old)+1)
	for name, other := range old {
		apps[name] = other
	}
	apps[app.Name] = e
	c.byKey[key] = append(slices.Clip(c.byKey[key]), e)
	c.apps.Store(&apps)
	return nil
}

// Applications returns the registered names, sorted.
func (c *Cache) Applications() []string {
	apps := *c.apps.Load()
	names := make([]string, 0, len(apps))
	for name := range apps {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// Token returns a token for the application with more than RefreshWindow
// left, from L1, the store, or a fetch. Errors are *Error:
// CodeApplicationNotFound for a name not registered (without I/O),
// CodeTokenRequestFailed when no valid token could be had (wrapping the
// fetch's error, or ctx's if ctx ended first). Errors a Fetch returns as
// *Error are returned as they are.
func (c *Cache) Token(ctx context.Context, applicationName string) (ClientCredential, error) {
	e := (*c.apps.Load())[applicationName]
	if e == nil {
		return ClientCredential{}, NewError(CodeApplicationNotFound,
			fmt.Sprintf("application %q is not configured", applicationName), nil)
	}
	if rec := e.l1.Load(); rec.validFor(c.now(), c.refreshWindow) {
		if ce := c.logger.Check(zapcore.DebugLevel, "token cache hit"); ce != nil {
			ce.Write(zap.String("application", applicationName), zap.Time("expires_at", rec.AccessTokenExpiresAt))
		}
		return *rec, nil
	}
	return c.refresh(ctx, e)
}

// Close closes the store.
func (c *Cache) Close() error {
	return c.store.Close()
}
