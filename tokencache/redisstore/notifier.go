package redisstore

import "sync"

// notifier fans announcements on a channel name out to the waiters
// registered for it, in process. MemoryStore publishes to it directly;
// redisstore.Store feeds it from its one shared pattern subscription.
type notifier struct {
	mu      sync.Mutex
	waiters map[string]map[chan struct{}]struct{}
	// watchers are lasting subscribers (see Store.Watch): woken only
	// by announcements from other processes.
	watchers map[string]map[chan struct{}]struct{}
}

// subscribe registers a waiter on channel; cancel unregisters it.
func (n *notifier) subscribe(channel string) (<-chan struct{}, func()) {
	return n.register(&n.waiters, channel)
}

// watch registers a watcher on channel; cancel unregisters it.
func (n *notifier) watch(channel string) (<-chan struct{}, func()) {
	return n.register(&n.watchers, channel)
}

// register adds a channel to (*m)[channel].
func (n *notifier) register(m *map[string]map[chan struct{}]struct{}, channel string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	n.mu.Lock()
	if *m == nil {
		*m = make(map[string]map[chan struct{}]struct{})
	}
	set := (*m)[channel]
	if set == nil {
		set = make(map[chan struct{}]struct{})
		(*m)[channel] = set
	}
	set[ch] = struct{}{}
	n.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			n.mu.Lock()
			defer n.mu.Unlock()
			delete(set, ch)
			if len(set) == 0 && len((*m)[channel]) == 0 {
				delete(*m, channel)
			}
		})
	}
}

// notifyForeign wakes the waiters and the watchers on channel, for an
// announcement from another process.
func (n *notifier) notifyForeign(channel string) {
	n.notify(channel)
	n.mu.Lock()
	defer n.mu.Unlock()
	for ch := range n.watchers[channel] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// notify wakes every waiter (not the watchers) on channel without blocking: a waiter that has
// not consumed the previous wakeup keeps just one.
func (n *notifier) notify(channel string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for ch := range n.waiters[channel] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// notifyAll wakes every waiter, as notify does.
func (n *notifier) notifyAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, set := range n.waiters {
		for ch := range set {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

// count returns the number of waiters on channel (tests).
func (n *notifier) count(channel string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.waiters[channel])
}

// countWatchers returns the number of watchers on channel (tests).
func (n *notifier) countWatchers(channel string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.watchers[channel])
}
