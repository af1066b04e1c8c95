package handoff

import (
	"maps"
	"slices"
	"testing"
	"time"
)

// HandedOff returns how many connections this View's server gave up to a
// newer View.
func (v *View) HandedOff() int64 { return v.handoffs.Load() }

// idleReads returns how many of v's connections its server is blocked
// reading a next request from.
func (v *View) idleReads() int {
	v.mu.Lock()
	conns := slices.Collect(maps.Keys(v.conns))
	v.mu.Unlock()
	n := 0
	for _, c := range conns {
		c.mu.Lock()
		if c.reading && c.readStarted == c.writes {
			n++
		}
		c.mu.Unlock()
	}
	return n
}

// awaitIdleRead waits, up to 10 s, until v's server is blocked reading a
// next request: no event of net/http's marks that.
func (v *View) awaitIdleRead(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); v.idleReads() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the server never waited for a next request")
		}
	}
}

// kept returns the most bytes one of v's connections keeps unanswered, and
// whether one holds a large buffer.
func (v *View) kept() (most int, large bool) {
	v.mu.Lock()
	conns := slices.Collect(maps.Keys(v.conns))
	v.mu.Unlock()
	for _, c := range conns {
		c.mu.Lock()
		most, large = max(most, len(c.pending)), large || c.large != nil
		c.mu.Unlock()
	}
	return most, large
}
