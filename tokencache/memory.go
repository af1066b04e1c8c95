package tokencache

import (
	"context"
	"sync"
	"time"
)

// MemoryStore is an in-process Store, the default when no Redis is
// configured. Its records live as long as their ttl, measured with the
// Cache's clock when the Cache made it (Options.Store unset), else with
// time.Now. Its locks work like Redis ones (SET NX PX, compare-and-delete),
// which within one Cache always succeed since singleflight already lets only
// one refresh per key run at a time.
type MemoryStore struct {
	now func() time.Time

	mu      sync.Mutex
	records map[string]memoryEntry
	locks   map[string]memoryEntry
}

type memoryEntry struct {
	rec     *ClientCredential // nil for a lock
	owner   string            // empty for a record
	expires time.Time
}

// NewMemoryStore returns an empty MemoryStore measuring ttls with time.Now.
func NewMemoryStore() *MemoryStore {
	return newMemoryStore(time.Now)
}

func newMemoryStore(now func() time.Time) *MemoryStore {
	return &MemoryStore{
		now:     now,
		records: make(map[string]memoryEntry),
		locks:   make(map[string]memoryEntry),
	}
}

// Get returns a copy of the record under key, or (nil, ErrNotFound).
func (s *MemoryStore) Get(_ context.Context, key string) (*ClientCredential, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.records[key]
	if !ok {
		return nil, ErrNotFound
	}
	if !s.now().Before(e.expires) {
		delete(s.records, key)
		return nil, ErrNotFound
	}
	rec := *e.rec
	return &rec, nil
}

// Set stores a copy of rec under key for ttl.
func (s *MemoryStore) Set(_ context.Context, key string, rec *ClientCredential, ttl time.Duration) error {
	if ttl <= 0 {
		return errNonPositiveTTL
	}
	cp := *rec
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records[key] = memoryEntry{rec: &cp, expires: s.now().Add(ttl)}
	return nil
}

// TryLock takes lockKey for ttl unless an unexpired lock holds it.
func (s *MemoryStore) TryLock(_ context.Context, lockKey string, ttl time.Duration) (string, bool, error) {
	if ttl <= 0 {
		return "", false, errNonPositiveTTL
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if e, held := s.locks[lockKey]; held && now.Before(e.expires) {
		return "", false, nil
	}
	owner := newOwner()
	s.locks[lockKey] = memoryEntry{owner: owner, expires: now.Add(ttl)}
	return owner, true, nil
}

// Unlock releases lockKey if owner holds it.
func (s *MemoryStore) Unlock(_ context.Context, lockKey, owner string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, held := s.locks[lockKey]
	if !held || e.owner != owner || !s.now().Before(e.expires) {
		return false, nil
	}
	delete(s.locks, lockKey)
	return true, nil
}

// Close does nothing.
func (s *MemoryStore) Close() error { return nil }

var _ Store = (*MemoryStore)(nil)
