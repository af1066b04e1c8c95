package tokencache

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

func TestProactiveRefreshTiming(t *testing.T) {
	for _, tc := range []struct {
		name      string
		ahead     float64
		refreshIn time.Duration
		want      time.Duration // after the fetch, jitter fixed at 0
	}{
		{"refresh_in honoured", 0, 10 * time.Minute, 10 * time.Minute},
		{"default half-life", 0, 0, 30 * time.Minute},
		{"refresh ahead 0.25", 0.25, 0, 15 * time.Minute},
		{"refresh_in past the window is clamped", 0, 59*time.Minute + 30*time.Second, 59 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			f := &scriptedFetcher{clock: clock, script: []fetchStep{{refreshIn: tc.refreshIn}}}
			c, h, _ := newClockCache(t, nil, clock, Options{RefreshAhead: tc.ahead}, testApp("graph-api", f.Fetch))
			start := clock.Now()
			if _, err := c.Token(t.Context(), "graph-api"); err != nil {
				t.Fatal(err)
			}
			pending := clock.pending()
			if len(pending) != 1 || !pending[0].Equal(start.Add(tc.want)) {
				t.Fatalf("background refresh scheduled at %v, want one at +%v", pending, tc.want)
			}
			clock.Advance(tc.want - time.Second)
			if n := f.calls.Load(); n != 1 {
				t.Fatalf("%d fetches before the refresh point, want 1", n)
			}
			clock.Advance(time.Second)
			if err := receive(t, h.background, "the background refresh"); err != nil {
				t.Fatal(err)
			}
			rec, err := c.Token(t.Context(), "graph-api")
			if err != nil || rec.AccessToken != "token-2" || f.calls.Load() != 2 {
				t.Errorf("after the refresh point: %q, %v after %d fetches; want token-2 after 2", rec.AccessToken, err, f.calls.Load())
			}
		})
	}
}

func TestRefreshDelayJitterIsBounded(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name          string
		at, deadline  time.Duration
		wantLo, hiMax time.Duration
	}{
		{"10% of 30m", 30 * time.Minute, 59 * time.Minute, 27 * time.Minute, 33 * time.Minute},
		{"capped at 5m", 24 * time.Hour, 48 * time.Hour, 24*time.Hour - 5*time.Minute, 24*time.Hour + 5*time.Minute},
		{"never past the deadline", 59 * time.Minute, 59 * time.Minute, 54 * time.Minute, 59 * time.Minute},
		{"due already", -time.Minute, 59 * time.Minute, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, random := range []float64{0, 0.25, 0.5, 0.75, 0.999999} {
				d := refreshDelay(now, now.Add(tc.at), now.Add(tc.deadline), random)
				if d < tc.wantLo || d > tc.hiMax {
					t.Errorf("random %v: delay %v, want within [%v, %v]", random, d, tc.wantLo, tc.hiMax)
				}
			}
			lo := refreshDelay(now, now.Add(tc.at), now.Add(tc.deadline), 0)
			hi := refreshDelay(now, now.Add(tc.at), now.Add(tc.deadline), 0.999999)
			if tc.at > 0 && lo == hi {
				t.Errorf("no jitter: %v for both ends", lo)
			}
		})
	}
}

func TestProactiveRefreshServesCurrentTokenMeanwhile(t *testing.T) {
	clock := newFakeClock()
	release, started := make(chan struct{}), make(chan struct{})
	f := &scriptedFetcher{clock: clock, script: []fetchStep{{}, {block: release, started: started}}}
	c, h, _ := newClockCache(t, nil, clock, Options{}, testApp("graph-api", f.Fetch))
	if _, err := c.Token(t.Context(), "graph-api"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(30 * time.Minute)
	receive(t, started, "the background fetch")
	for range 100 {
		rec, err := c.Token(t.Context(), "graph-api")
		if err != nil || rec.AccessToken != "token-1" {
			t.Fatalf("during the background refresh: %q, %v; want token-1 at once", rec.AccessToken, err)
		}
	}
	close(release)
	if err := receive(t, h.background, "the background refresh"); err != nil {
		t.Fatal(err)
	}
	if rec, _ := c.Token(t.Context(), "graph-api"); rec.AccessToken != "token-2" {
		t.Errorf("after the background refresh: %q, want token-2", rec.AccessToken)
	}
}

func TestProactiveRefreshStopsOnClose(t *testing.T) {
	clock := newFakeClock()
	started := make(chan struct{})
	f := &scriptedFetcher{clock: clock, script: []fetchStep{{}, {block: make(chan struct{}), started: started}}}
	c, h, logs := newClockCache(t, nil, clock, Options{}, testApp("graph-api", f.Fetch))
	if _, err := c.Token(t.Context(), "graph-api"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(30 * time.Minute)
	receive(t, started, "the background fetch") // blocked until its ctx ends
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	// Close waited for the background refresh: its result is in already.
	select {
	case err := <-h.background:
		if err == nil {
			t.Error("the cancelled background refresh succeeded")
		}
	default:
		t.Fatal("Close returned before the background refresh ended")
	}
	if p := clock.pending(); len(p) != 0 {
		t.Errorf("timers pending after Close: %v", p)
	}
	if n := logs.FilterMessageSnippet("backing off").Len(); n != 0 {
		t.Error("a refresh cancelled by Close started a backoff")
	}
	clock.Advance(2 * time.Hour)
	if n := f.calls.Load(); n != 2 {
		t.Errorf("%d fetches after Close, want none beyond the 2 before", n)
	}
}

func TestBackgroundRefreshFailureIsInvisible(t *testing.T) {
	clock := newFakeClock()
	transient := &classifiedError{}
	f := &scriptedFetcher{clock: clock, script: []fetchStep{{}, {err: transient}, {err: transient}, {}}}
	c, h, logs := newClockCache(t, nil, clock, Options{}, testApp("graph-api", f.Fetch))
	if _, err := c.Token(t.Context(), "graph-api"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(30 * time.Minute)
	if err := receive(t, h.background, "the failed refresh"); err == nil {
		t.Fatal("background refresh succeeded, want the scripted failure")
	}
	if rec, err := c.Token(t.Context(), "graph-api"); err != nil || rec.AccessToken != "token-1" {
		t.Fatalf("after a failed background refresh: %q, %v; want token-1, no error", rec.AccessToken, err)
	}
	// Retries follow the backoff: 1.25s, then 2.5s (jitter fixed at 0.5).
	if p := clock.pending(); len(p) != 1 || p[0].Sub(clock.Now()) != 1250*time.Millisecond {
		t.Fatalf("retry scheduled at %v, want in 1.25s", p)
	}
	clock.Advance(1250 * time.Millisecond)
	receive(t, h.background, "the first retry")
	clock.Advance(2500 * time.Millisecond)
	if err := receive(t, h.background, "the second retry"); err != nil {
		t.Fatal(err)
	}
	if rec, err := c.Token(t.Context(), "graph-api"); err != nil || rec.AccessToken != "token-4" {
		t.Errorf("after the retry: %q, %v; want token-4", rec.AccessToken, err)
	}
	if n := logs.FilterMessageSnippet("backing off").Len(); n != 2 {
		t.Errorf("%d backoff warnings, want 2", n)
	}
}

func TestWaitTimeoutBoundsACallerWithoutToken(t *testing.T) {
	clock := newFakeClock()
	release := make(chan struct{})
	defer close(release)
	f := &scriptedFetcher{clock: clock, script: []fetchStep{{block: release}}}
	c, _, _ := newClockCache(t, nil, clock, Options{WaitTimeout: 20 * time.Millisecond}, testApp("graph-api", f.Fetch))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err := c.Token(ctx, "graph-api")
	var coded *Error
	if !asError(err, &coded) || ctx.Err() != nil {
		t.Fatalf("Token() = %v, want *Error after WaitTimeout", err)
	}
}

// TestFleetProactiveRefreshIsOneTokenRequest: three replicas sharing one
// Redis all reach the refresh point at the same instant (no jitter, the
// worst case); one of them refreshes and the others take its record, so the
// fleet makes one token request per refresh cycle.
func TestFleetProactiveRefreshIsOneTokenRequest(t *testing.T) {
	mr := miniredis.RunT(t)
	clock := newFakeClock()
	f := &scriptedFetcher{clock: clock, script: []fetchStep{{}, {}, {}}}
	app := testApp("graph-api", f.Fetch)
	var replicas []*testCache
	var hooks []*hooks
	for range 3 {
		c, h, _ := newClockCache(t, newMiniredisStore(t, mr), clock, Options{}, app)
		c.random = func() float64 { return 0.5 } // the same refresh point for all
		replicas, hooks = append(replicas, c), append(hooks, h)
	}
	for _, c := range replicas {
		if rec, err := c.Token(t.Context(), "graph-api"); err != nil || rec.AccessToken != "token-1" {
			t.Fatalf("cold start: %q, %v", rec.AccessToken, err)
		}
	}
	if n := f.calls.Load(); n != 1 {
		t.Fatalf("cold start made %d token requests, want 1", n)
	}

	clock.Advance(30 * time.Minute) // half of the one-hour lifetime
	// Each replica either refreshes in the background (joining the lock
	// winner's token) or, when the winner's announcement arrives before its
	// own timer fires, takes the announced token and re-arms its timer.
	for i, c := range replicas {
		eventually(t, fmt.Sprintf("replica %d holding the refreshed token", i), func() bool {
			rec, err := c.Token(t.Context(), "graph-api")
			return err == nil && rec.AccessToken == "token-2"
		})
	}
	for _, h := range hooks { // the background refreshes that ran ended well
		for len(h.background) > 0 {
			if err := <-h.background; err != nil {
				t.Errorf("a background refresh failed: %v", err)
			}
		}
	}
	if n := f.calls.Load(); n != 2 {
		t.Errorf("the refresh cycle made %d token requests across 3 replicas, want 1 (2 in all)", n-1)
	}
}
