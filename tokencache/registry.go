package tokencache

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
)

// keyState is what the applications sharing one record key share: the
// record's keys, the current record, the proactive refresh timer, the
// in-process backoff and the purge memory.
type keyState struct {
	key, lockKey, backoffKey, channel string

	// entries are the applications with this key. Guarded by
	// Cache.registerMu; empty once the last one is unregistered.
	entries []*entry

	mu sync.Mutex
	// current is the record last put into L1 (as stored).
	current *ClientCredential
	// refreshAt is when current is due for a background refresh (zero:
	// compute it from RefreshAhead).
	refreshAt time.Time
	timer     Timer
	// removed is set when the last entry goes: no more timers.
	removed bool
	// failure is the in-process backoff (zero Until when none), and
	// lastErr its cause, kept for errors.As by callers in this process.
	failure Backoff
	lastErr error
	// purged holds SHA-256 fingerprints of purged tokens until they expire;
	// lastPurge rate-limits Purge.
	purged    map[[32]byte]time.Time
	lastPurge time.Time

	// unshared is set once this replica's own token proved unfit for the
	// store (see Cache.shareable): from then on the key is fetched without
	// the store.
	unshared atomic.Bool
	// rejected is the SHA-256 fingerprint of the last store record's token
	// that was not trusted, so that reading it again (a lock loser polls)
	// does not log it again. Guarded by mu.
	rejected [32]byte
}

func newKeyState(key string) *keyState {
	return &keyState{key: key, lockKey: LockKey(key), backoffKey: BackoffKey(key), channel: UpdateChannel(key)}
}

// stopTimer stops the proactive refresh timer, if any.
func (ks *keyState) stopTimer() {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.timer != nil {
		ks.timer.Stop()
		ks.timer = nil
	}
}

// validate checks app and returns it with its scopes copied.
func validate(app Application) (Application, error) {
	switch {
	case app.Name == "":
		return app, errors.New("tokencache: registering application: empty name")
	case app.Identity == "":
		return app, fmt.Errorf("tokencache: registering application %q: empty identity", app.label())
	case app.Fetch == nil:
		return app, fmt.Errorf("tokencache: registering application %q: nil fetch function", app.label())
	case len(app.Scopes) == 0:
		return app, fmt.Errorf("tokencache: registering application %q: no scopes", app.label())
	}
	for _, s := range app.Scopes {
		if s == "" || strings.ContainsFunc(s, unicode.IsSpace) {
			return app, fmt.Errorf("tokencache: registering application %q: scope %q is empty or contains whitespace", app.label(), s)
		}
	}
	app.Scopes = slices.Clone(app.Scopes)
	return app, nil
}

// Register adds an application. The name must be new and not empty,
// Identity not empty, Fetch not nil, and Scopes at least one, none empty or
// containing spaces. It is safe to call concurrently with Token.
func (c *Cache) Register(app Application) error {
	app, err := validate(app)
	if err != nil {
		return err
	}
	c.registerMu.Lock()
	defer c.registerMu.Unlock()
	if _, dup := (*c.apps.Load())[app.Name]; dup {
		return fmt.Errorf("tokencache: registering application %q: already registered", app.Name)
	}
	c.put(app, nil)
	return nil
}

// Upsert registers app, or replaces the definition (Fetch, Identity,
// Scopes, Label, CredentialID) of the application of that name. When the record key stays the
// same (same Identity and scope set), the application keeps its L1 token,
// its proactive refresh and any refresh in flight; otherwise it starts
// afresh under its new key. It is safe to call concurrently with Token, for
// config reloads that keep the Cache.
func (c *Cache) Upsert(app Application) error {
	app, err := validate(app)
	if err != nil {
		return err
	}
	c.registerMu.Lock()
	defer c.registerMu.Unlock()
	c.put(app, (*c.apps.Load())[app.Name])
	return nil
}

// Unregister removes the application of that name, if registered. When no
// other application shares its record key, that key's background refresh
// stops. It is safe to call concurrently with Token.
func (c *Cache) Unregister(name string) {
	c.registerMu.Lock()
	defer c.registerMu.Unlock()
	old := *c.apps.Load()
	e := old[name]
	if e == nil {
		return
	}
	apps := maps.Clone(old)
	delete(apps, name)
	c.detach(e)
	c.apps.Store(&apps)
}

// put installs app, replacing old (nil for a new name). The caller holds
// registerMu.
func (c *Cache) put(app Application, old *entry) {
	key := RecordKey(c.keyPrefix, app)
	var ks *keyState
	if old != nil && old.ks.key == key {
		ks = old.ks // same record: keep its L1, timer and flight
		ks.entries = slices.DeleteFunc(slices.Clone(ks.entries), func(other *entry) bool { return other == old })
	} else {
		if old != nil {
			c.detach(old)
		}
		ks = c.keys[key]
		if ks == nil {
			ks = newKeyState(key)
			c.keys[key] = ks
		}
	}
	e := &entry{app: app, ks: ks, scope: strings.Join(app.Scopes, " ")}
	ks.mu.Lock()
	if cur := ks.current; cur != nil {
		e.l1.Store(e.view(cur))
	}
	ks.mu.Unlock()
	ks.entries = append(slices.Clip(ks.entries), e)
	apps := maps.Clone(*c.apps.Load())
	apps[app.Name] = e
	c.apps.Store(&apps)
}

// detach removes e from its key's entries, and forgets the key when e was
// the last. The caller holds registerMu.
func (c *Cache) detach(e *entry) {
	ks := e.ks
	ks.entries = slices.DeleteFunc(slices.Clone(ks.entries), func(other *entry) bool { return other == e })
	if len(ks.entries) > 0 {
		return
	}
	delete(c.keys, ks.key)
	ks.mu.Lock()
	ks.removed = true
	if ks.timer != nil {
		ks.timer.Stop()
		ks.timer = nil
	}
	ks.mu.Unlock()
}

// view returns rec as e returns it: with e's label and scope.
func (e *entry) view(rec *ClientCredential) *ClientCredential {
	cp := *rec
	cp.ApplicationName = e.app.label()
	cp.Scope = e.scope
	return &cp
}

// Applications returns the registered names, sorted.
func (c *Cache) Applications() []string {
	return slices.Sorted(maps.Keys(*c.apps.Load()))
}

// anyEntry returns one current entry of ks (nil if none), for a background
// refresh: entries sharing a key fetch the same token.
func (c *Cache) anyEntry(ks *keyState) *entry {
	c.registerMu.Lock()
	defer c.registerMu.Unlock()
	if len(ks.entries) == 0 {
		return nil
	}
	return ks.entries[0]
}
