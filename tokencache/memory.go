package tokencache

import (
	"context"
	"slices"
	"sync"
	"time"
)

// MemoryStore is an in-process Store, the default without Redis. Its
// entries live as long as their ttl, measured with the Cache's clock when
// the Cache made it, else with time.Now. Its locks work like Redis ones;
// no other process shares it: Publish does nothing and Watch returns nil.
type MemoryStore struct {
	now func() time.Time

	mu       sync.Mutex
	records  map[string]memoryEntry
	locks    map[string]memoryEntry
	backoffs map[string]memoryEntry
	marks    map[string]memoryEntry
}

type memoryEntry struct {
	rec     *Record       // records only
	backoff *Backoff      // backoffs only
	purged  []PurgedToken // purge marks only
	owner   string        // locks only
	expires time.Time
}

// NewMemoryStore returns an empty MemoryStore measuring ttls with time.Now.
func NewMemoryStore() *MemoryStore { return newMemoryStore(time.Now) }

func newMemoryStore(now func() time.Time) *MemoryStore {
	return &MemoryStore{now: now, records: make(map[string]memoryEntry),
		locks: make(map[string]memoryEntry), backoffs: make(map[string]memoryEntry), marks: make(map[string]memoryEntry)}
}

// live returns the unexpired entry under key in m, deleting an expired one.
// The caller holds s.mu.
func (s *MemoryStore) live(m map[string]memoryEntry, key string) (memoryEntry, bool) {
	e, ok := m[key]
	if ok && !s.now().Before(e.expires) {
		delete(m, key)
		return memoryEntry{}, false
	}
	return e, ok
}

// put stores e under key in m for ttl.
func (s *MemoryStore) put(m map[string]memoryEntry, key string, e memoryEntry, ttl time.Duration) error {
	if ttl <= 0 {
		return errNonPositiveTTL
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e.expires = s.now().Add(ttl)
	m[key] = e
	return nil
}

// Get returns a copy of the record under key, or (nil, ErrNotFound).
func (s *MemoryStore) Get(_ context.Context, key string) (*Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.live(s.records, key)
	if !ok {
		return nil, ErrNotFound
	}
	rec := *e.rec
	return &rec, nil
}

// Set stores a copy of rec under key for ttl.
func (s *MemoryStore) Set(_ context.Context, key string, rec *Record, ttl time.Duration) error {
	cp := *rec
	return s.put(s.records, key, memoryEntry{rec: &cp}, ttl)
}

// DeleteRecord deletes the record under key if it holds accessToken.
func (s *MemoryStore) DeleteRecord(_ context.Context, key, accessToken string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.live(s.records, key)
	if !ok || e.rec.AccessToken != accessToken {
		return false, nil
	}
	delete(s.records, key)
	return true, nil
}

// TryLock takes lockKey for ttl unless an unexpired lock holds it.
func (s *MemoryStore) TryLock(_ context.Context, lockKey string, ttl time.Duration) (string, bool, error) {
	if ttl <= 0 {
		return "", false, errNonPositiveTTL
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, held := s.live(s.locks, lockKey); held {
		return "", false, nil
	}
	owner := NewOwner()
	s.locks[lockKey] = memoryEntry{owner: owner, expires: s.now().Add(ttl)}
	return owner, true, nil
}

// ExtendLock resets lockKey's ttl if owner holds it.
func (s *MemoryStore) ExtendLock(_ context.Context, lockKey, owner string, ttl time.Duration) (bool, error) {
	if ttl <= 0 {
		return false, errNonPositiveTTL
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, held := s.live(s.locks, lockKey)
	if !held || e.owner != owner {
		return false, nil
	}
	e.expires = s.now().Add(ttl)
	s.locks[lockKey] = e
	return true, nil
}

// Unlock releases lockKey if owner holds it.
func (s *MemoryStore) Unlock(_ context.Context, lockKey, owner string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, held := s.live(s.locks, lockKey)
	if !held || e.owner != owner {
		return false, nil
	}
	delete(s.locks, lockKey)
	return true, nil
}

// GetBackoff returns a copy of the backoff under key, or (nil, ErrNotFound).
func (s *MemoryStore) GetBackoff(_ context.Context, key string) (*Backoff, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.live(s.backoffs, key)
	if !ok {
		return nil, ErrNotFound
	}
	b := *e.backoff
	return &b, nil
}

// SetBackoff stores a copy of b under key for ttl.
func (s *MemoryStore) SetBackoff(_ context.Context, key string, b *Backoff, ttl time.Duration) error {
	cp := *b
	return s.put(s.backoffs, key, memoryEntry{backoff: &cp}, ttl)
}

// DeleteBackoff deletes the backoff under key.
func (s *MemoryStore) DeleteBackoff(_ context.Context, key string) error {
	return s.del(s.backoffs, key)
}

// SetPurgeMark stores a copy of purged under key for ttl.
func (s *MemoryStore) SetPurgeMark(_ context.Context, key string, purged []PurgedToken, ttl time.Duration) error {
	return s.put(s.marks, key, memoryEntry{purged: slices.Clone(purged)}, ttl)
}

// GetPurgeMark returns a copy of the purge mark under key, or (nil, ErrNotFound).
func (s *MemoryStore) GetPurgeMark(_ context.Context, key string) ([]PurgedToken, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.live(s.marks, key)
	if !ok {
		return nil, ErrNotFound
	}
	return slices.Clone(e.purged), nil
}

// RemoveRecord deletes the record under key, whatever it holds.
func (s *MemoryStore) RemoveRecord(_ context.Context, key string) error { return s.del(s.records, key) }

func (s *MemoryStore) del(m map[string]memoryEntry, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(m, key)
	return nil
}

// Publish does nothing: no other process shares the store.
func (s *MemoryStore) Publish(context.Context, string, string, *Record) error { return nil }

// Watch returns no updates: no other process shares the store.
func (s *MemoryStore) Watch(context.Context, string, string) (<-chan *Record, func()) {
	return nil, func() {}
}

// Authenticates reports true: records never leave the process.
func (s *MemoryStore) Authenticates() bool { return true }

// KeyPrefix returns DefaultKeyPrefix.
func (s *MemoryStore) KeyPrefix() string { return DefaultKeyPrefix }

// Close does nothing.
func (s *MemoryStore) Close() error { return nil }

var _ Store = (*MemoryStore)(nil)
