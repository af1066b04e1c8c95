package tokencache

import "sync"

// notifier fans announcements on a channel name out to the waiters
// registered for it, in process. MemoryStore publishes to it directly;
// RedisStore feeds it from its one shared pattern subscription.
type notifier struct {
	mu      sync.Mutex
	waiters map[string]map[chan struct{}]struct{}
}

// subscribe registers a waiter on channel; cancel unregisters it.
func (n *notifier) subscribe(channel string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	n.mu.Lock()
	if n.waiters == nil {
		n.waiters = make(map[string]map[chan struct{}]struct{})
	}
	set := n.waiters[channel]
	if set == nil {
		set = make(map[chan struct{}]struct{})
		n.waiters[channel] = set
	}
	set[ch] = struct{}{}
	n.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			n.mu.Lock()
			defer n.mu.Unlock()
			delete(set, ch)
			if len(set) == 0 && len(n.waiters[channel]) == 0 {
				delete(n.waiters, channel)
			}
		})
	}
}

// notify wakes every waiter on channel without blocking: a waiter that has
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
