package tokencache

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func TestUpsertKeepsL1ForTheSameKey(t *testing.T) {
	clock := newFakeClock()
	oldFetch := &scriptedFetcher{clock: clock, script: []fetchStep{{}}}
	newFetch := &scriptedFetcher{clock: clock, script: []fetchStep{{}}}
	c, h, _ := newClockCache(t, nil, clock, Options{}, testApp("graph-api", oldFetch.Fetch))
	first, err := c.Token(t.Context(), "graph-api")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Upsert(testApp("graph-api", newFetch.Fetch)); err != nil {
		t.Fatal(err)
	}
	got, err := c.Token(t.Context(), "graph-api")
	if err != nil || got != first || newFetch.calls.Load() != 0 {
		t.Errorf("after Upsert with the same key: %v, %v; want the kept token, no fetch", got, err)
	}
	// The kept background refresh uses the new definition.
	clock.Advance(30 * time.Minute)
	receive(t, h.background, "the background refresh")
	if oldFetch.calls.Load() != 1 || newFetch.calls.Load() != 1 {
		t.Errorf("fetches old %d, new %d; want the refresh by the new Fetch", oldFetch.calls.Load(), newFetch.calls.Load())
	}
}

func TestUpsertWithANewKeyStartsAfresh(t *testing.T) {
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	c, _, _ := newClockCache(t, nil, clock, Options{}, testApp("graph-api", f.Fetch))
	first, _ := c.Token(t.Context(), "graph-api")
	changed := testApp("graph-api", f.Fetch)
	changed.Scopes = []string{"api://other/.default"}
	if err := c.Upsert(changed); err != nil {
		t.Fatal(err)
	}
	got, err := c.Token(t.Context(), "graph-api")
	if err != nil || got.AccessToken == first.AccessToken || got.ID == first.ID || got.Scope != "api://other/.default" {
		t.Errorf("after Upsert with new scopes: %v, %v; want a new token under a new key", got, err)
	}
	if p := clock.pending(); len(p) != 1 {
		t.Errorf("%d refresh timers, want only the new key's", len(p))
	}
	if err := c.Upsert(testApp("orders-api", f.Fetch)); err != nil {
		t.Fatal(err)
	}
	if got := c.Applications(); len(got) != 2 {
		t.Errorf("Applications() = %v after Upsert of a new name", got)
	}
}

func TestUnregister(t *testing.T) {
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	c, _, _ := newClockCache(t, nil, clock, Options{}, testApp("graph-api", f.Fetch))
	if _, err := c.Token(t.Context(), "graph-api"); err != nil {
		t.Fatal(err)
	}
	c.Unregister("graph-api")
	c.Unregister("graph-api") // twice is fine
	var coded *Error
	if _, err := c.Token(t.Context(), "graph-api"); !errors.As(err, &coded) || coded.Code != CodeApplicationNotFound {
		t.Errorf("Token() after Unregister = %v, want %s", err, CodeApplicationNotFound)
	}
	if p := clock.pending(); len(p) != 0 {
		t.Errorf("refresh timers %v left after the last application of the key went", p)
	}
}

func TestUpsertConcurrentWithToken(t *testing.T) {
	clock := newFakeClock()
	f := newFakeFetcher(clock)
	c, _, _ := newClockCache(t, nil, clock, Options{}, testApp("graph-api", f.Fetch))
	if _, err := c.Token(t.Context(), "graph-api"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				if _, err := c.Token(ctx, "graph-api"); err != nil && ctx.Err() == nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for range 200 {
		if err := c.Upsert(testApp("graph-api", f.Fetch)); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	wg.Wait()
	if n := f.calls.Load(); n != 1 {
		t.Errorf("%d fetches across 200 Upserts with the same key, want 1", n)
	}
}
