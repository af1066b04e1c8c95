package tokencache

// testHooks let tests see the engine's inner steps; nil ones are not called.
type testHooks struct {
	beforeFlight      func(key string)                // a caller is about to join or start a refresh
	afterBackground   func(key string, err error)     // a background refresh ended
	onLockExtended    func(key string, extended bool) // an extension of the refresh lock was tried
	onAwaitWake       func(key string, notified bool) // a lock loser woke (notified: by pub/sub)
	onFetchInProgress func(key string)                // the lock holder is about to call Fetch
	beforeSlot        func(key string, full bool)     // a refresh is about to wait for a fetch slot (full: none free)
}

// hook calls f(key, v) unless f is nil.
func hook[T any](f func(string, T), key string, v T) {
	if f != nil {
		f(key, v)
	}
}
