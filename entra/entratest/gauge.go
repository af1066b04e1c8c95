package entratest

import "sync/atomic"

// gauge counts what is in progress and remembers the most at once.
type gauge struct{ now, most atomic.Int64 }

// enter counts one more in progress until the returned func is called.
func (g *gauge) enter() (leave func()) {
	n := g.now.Add(1)
	for most := g.most.Load(); n > most && !g.most.CompareAndSwap(most, n); most = g.most.Load() {
	}
	return func() { g.now.Add(-1) }
}

// MostConcurrentTokenRequests returns the largest number of token requests
// the emulator was answering at once (all grants, the managed identity
// endpoints aside).
func (e *Emulator) MostConcurrentTokenRequests() int64 { return e.concurrent.most.Load() }
