package tokencache

import (
	"container/list"
	"sync"
	"time"
)

// boundedMemory is a least-recently-used map of values that expire, of at
// most bound entries: an Exchanger's L1. Safe for concurrent use.
type boundedMemory[K comparable, V any] struct {
	mu      sync.Mutex
	bound   int
	order   *list.List // front: most recently used; values are *memoryItem[K, V]
	byKey   map[K]*list.Element
	evicted uint64
}

type memoryItem[K comparable, V any] struct {
	key   K
	value V
	until time.Time // unusable from then on
}

func newBoundedMemory[K comparable, V any](bound int) *boundedMemory[K, V] {
	return &boundedMemory[K, V]{bound: max(bound, 1), order: list.New(), byKey: make(map[K]*list.Element)}
}

// get returns the value under key if it is usable at now; an expired one
// is removed.
func (m *boundedMemory[K, V]) get(key K, now time.Time) (V, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var zero V
	el, ok := m.byKey[key]
	if !ok {
		return zero, false
	}
	item := el.Value.(*memoryItem[K, V])
	if !now.Before(item.until) {
		m.order.Remove(el)
		delete(m.byKey, key)
		return zero, false
	}
	m.order.MoveToFront(el)
	return item.value, true
}

// putUnlessHeld puts value under key until until, unless key holds a
// value usable at now; it reports whether it put. One lock: of concurrent
// callers, one puts.
func (m *boundedMemory[K, V]) putUnlessHeld(key K, value V, now, until time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if el, ok := m.byKey[key]; ok && now.Before(el.Value.(*memoryItem[K, V]).until) {
		return false
	}
	m.putLocked(key, value, until)
	return true
}

// put keeps value under key until until, past the bound evicting the
// least recently used.
func (m *boundedMemory[K, V]) put(key K, value V, until time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.putLocked(key, value, until)
}

// putLocked is put; m.mu is held.
func (m *boundedMemory[K, V]) putLocked(key K, value V, until time.Time) {
	if el, ok := m.byKey[key]; ok {
		el.Value = &memoryItem[K, V]{key: key, value: value, until: until}
		m.order.MoveToFront(el)
		return
	}
	m.byKey[key] = m.order.PushFront(&memoryItem[K, V]{key: key, value: value, until: until})
	for m.order.Len() > m.bound {
		oldest := m.order.Back()
		m.order.Remove(oldest)
		delete(m.byKey, oldest.Value.(*memoryItem[K, V]).key)
		m.evicted++
	}
}

// remove forgets key.
func (m *boundedMemory[K, V]) remove(key K) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if el, ok := m.byKey[key]; ok {
		m.order.Remove(el)
		delete(m.byKey, key)
	}
}

// len returns the number of entries, expired ones included.
func (m *boundedMemory[K, V]) len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.order.Len()
}
