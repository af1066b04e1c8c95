package tokencache

import (
	"slices"
	"time"
)

// Source says where a handle's current token came from.
type Source string

// Sources of a token (Status.Source).
const (
	SourceFetched Source = "fetched" // this process fetched it
	SourceStore   Source = "store"   // taken from the store: another replica fetched it
)

// Status is a snapshot of a handle's key, for an admin API or a probe.
// Record holds the token itself: show its metadata, never the token.
type Status struct {
	// Record is the current record as the handle returns it (nil for none);
	// it may be expired.
	Record *Record
	// Usable reports whether Record has more than RefreshWindow left.
	Usable bool
	// Source is where Record came from; empty without a record.
	Source Source
	// NextRefresh is when the next background refresh is planned; zero for
	// none.
	NextRefresh time.Time
	// Failure describes the failures since the last success; nil for none.
	Failure *Failure
}

// Failure is the backoff state of a key after failed token requests.
type Failure struct {
	Backoff
	Active bool // Until is still ahead
	// Err is the cause when this process saw it (nil when the backoff came
	// from another replica), for errors.As. It holds no token or secret.
	Err error
}

// Status returns a snapshot of h's key. It does no I/O.
func (h *Handle) Status() Status {
	c, ks := h.c, h.ks
	now := c.now()
	ks.mu.Lock()
	defer ks.mu.Unlock()
	var st Status
	if ks.current != nil {
		st.Record = h.view(ks.current)
		st.Usable = ks.current.validFor(now, c.refreshWindow)
		st.Source = ks.source
	}
	st.NextRefresh = ks.nextRefresh
	if b := ks.failure; b.Attempts > 0 || !b.Until.IsZero() {
		st.Failure = &Failure{Backoff: b, Active: now.Before(b.Until), Err: ks.lastErr}
	}
	return st
}

// Key returns the record key of h's application (see RecordKey).
func (h *Handle) Key() string { return h.ks.key }

// Scope returns h's scopes, space-separated.
func (h *Handle) Scope() string { return h.scope }

// Prefetch keeps h's key warm: it starts a background fetch now unless the
// key holds a usable token, and while h is live the key's background
// refreshes go on after failures too, so that a token is ready before the
// first request and stays so without traffic.
func (h *Handle) Prefetch() {
	c, ks := h.c, h.ks
	h.prefetch.Store(true)
	if ks.currentRecord().validFor(c.now(), c.refreshWindow) {
		return // its background refresh is armed
	}
	if c.prefetchSpread <= 0 {
		c.backgroundRefresh(ks, nil)
		return
	}
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.timer != nil || ks.removed || c.isClosed() {
		return // a refresh is armed already
	}
	delay := time.Duration(c.random() * float64(c.prefetchSpread))
	ks.nextRefresh = c.now().Add(delay)
	ks.timer = c.clock.AfterFunc(delay, func() { c.backgroundRefresh(ks, nil) })
}

// prefetchRetryInterval is the least time between two background attempts
// for a key kept warm without a usable token.
const prefetchRetryInterval = time.Second

// warm reports whether a live handle of ks asked for Prefetch.
func (c *Cache) warm(ks *keyState) bool {
	c.registerMu.Lock()
	defer c.registerMu.Unlock()
	return slices.ContainsFunc(ks.handles, func(h *Handle) bool { return h.prefetch.Load() })
}
