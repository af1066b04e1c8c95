package integration

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// load is traffic of workers that each call a function in a loop until
// stopped, for tests that reload or fault a sidecar under requests.
type loadRun struct {
	stopping chan struct{}
	once     sync.Once
	workers  sync.WaitGroup
	calls    atomic.Int64
}

// startLoad starts n workers, each calling do(worker) until the load is
// stopped (at the test's end at the latest).
func startLoad(t *testing.T, n int, do func(worker int)) *loadRun {
	l := &loadRun{stopping: make(chan struct{})}
	for worker := range n {
		l.workers.Go(func() {
			for {
				select {
				case <-l.stopping:
					return
				default:
				}
				do(worker)
				l.calls.Add(1)
			}
		})
	}
	t.Cleanup(l.stop)
	return l
}

// awaitMore waits until n more calls have returned, failing t after 10s
// (a load that does not run).
func (l *loadRun) awaitMore(t *testing.T, n int64) {
	t.Helper()
	want := l.calls.Load() + n
	for deadline := time.Now().Add(10 * time.Second); l.calls.Load() < want; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the load made %d of %d calls within 10s", l.calls.Load(), want)
		}
	}
}

// stop stops the workers and waits for their calls in flight.
func (l *loadRun) stop() {
	l.once.Do(func() { close(l.stopping) })
	l.workers.Wait()
}
