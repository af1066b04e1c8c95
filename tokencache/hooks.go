package tokencache

// testHooks let tests see the engine's inner steps. Cache.hooks is nil in
// production; a nil *testHooks, or a nil func in it, does nothing.
type testHooks struct {
	beforeFlight      func(key string)                // a caller is about to join or start a refresh
	afterBackground   func(key string, err error)     // a background refresh ended
	onLockExtended    func(key string, extended bool) // an extension of the refresh lock was tried
	onAwaitWake       func(key string, notified bool) // a lock loser woke (notified: by pub/sub)
	onFetchInProgress func(key string)                // the lock holder is about to call Fetch
}

func (t *testHooks) flightStarting(key string) {
	if t != nil && t.beforeFlight != nil {
		t.beforeFlight(key)
	}
}

func (t *testHooks) backgroundEnded(key string, err error) {
	if t != nil && t.afterBackground != nil {
		t.afterBackground(key, err)
	}
}

func (t *testHooks) lockExtended(key string, extended bool) {
	if t != nil && t.onLockExtended != nil {
		t.onLockExtended(key, extended)
	}
}

func (t *testHooks) awaitWoke(key string, notified bool) {
	if t != nil && t.onAwaitWake != nil {
		t.onAwaitWake(key, notified)
	}
}

func (t *testHooks) fetchInProgress(key string) {
	if t != nil && t.onFetchInProgress != nil {
		t.onFetchInProgress(key)
	}
}
