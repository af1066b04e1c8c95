package tokencache

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestSetLoggerSwapsTheLogger: after SetLogger, the cache logs to the new
// logger only (a reload closes the old config's writers); nil means a
// no-op logger.
func TestSetLoggerSwapsTheLogger(t *testing.T) {
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	c, oldLogs := newTestCache(t, nil, clock, testApp("graph-api", f.Fetch), testApp("orders-api", f.Fetch))
	t.Cleanup(func() { _ = c.Close() })
	core, newLogs := observer.New(zapcore.DebugLevel)
	c.SetLogger(zap.New(core))
	if _, err := c.Token(t.Context(), "graph-api"); err != nil {
		t.Fatal(err)
	}
	if n := oldLogs.Len(); n != 0 {
		t.Errorf("%d logs to the replaced logger: %v", n, oldLogs.All())
	}
	if n := newLogs.FilterMessage("fetched access token").Len(); n != 1 {
		t.Errorf("%d fetch logs to the new logger, want 1", n)
	}
	c.SetLogger(nil)
	if _, err := c.Token(t.Context(), "graph-api"); err != nil { // hit: debug log
		t.Fatal(err)
	}
	c.PurgeRejected(t.Context(), "graph-api", "token-1")
	if n := newLogs.Len(); n != 1 {
		t.Errorf("%d logs to the logger replaced by nil, want the 1 from before", n)
	}
}

// TestSetLoggerIsRaceFree swaps the logger while Token (hit and miss) and
// PurgeRejected log; run with -race.
func TestSetLoggerIsRaceFree(t *testing.T) {
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	c, _ := newTestCache(t, nil, clock, testApp("graph-api", f.Fetch))
	t.Cleanup(func() { _ = c.Close() })
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 200 {
				rec, _ := c.Token(context.Background(), "graph-api")
				if j%50 == 0 {
					c.PurgeRejected(context.Background(), "graph-api", rec.AccessToken)
				}
			}
		})
		wg.Go(func() {
			for j := range 200 {
				if (i+j)%3 == 0 {
					c.SetLogger(nil)
				} else {
					core, _ := observer.New(zapcore.DebugLevel)
					c.SetLogger(zap.New(core))
				}
			}
		})
	}
	wg.Wait()
}

// closeErrStore fails its first Close, as a store can.
type closeErrStore struct {
	Store
	closes int
}

func (s *closeErrStore) Close() error {
	s.closes++
	if s.closes == 1 {
		return errors.New("close failed")
	}
	return errors.New("closed twice")
}

// TestCloseTwice: the second Close does nothing and returns nil, instead
// of closing the store again (go-redis says "client is closed").
func TestCloseTwice(t *testing.T) {
	mr := miniredis.RunT(t)
	store, err := newRedisStore(redisOptions{URL: "redis://" + mr.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Options{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("first Close() = %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close() = %v, want nil", err)
	}

	failing := &closeErrStore{Store: NewMemoryStore()}
	c, err = New(Options{Store: failing})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err == nil || !strings.Contains(err.Error(), "close failed") {
		t.Errorf("first Close() = %v, want the store's error", err)
	}
	if err := c.Close(); err != nil || failing.closes != 1 {
		t.Errorf("second Close() = %v after %d store closes, want nil and 1", err, failing.closes)
	}
}
