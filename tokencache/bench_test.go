package tokencache

import (
	"context"
	"testing"
	"time"
)

func newBenchCache(b *testing.B) *Cache {
	// The real clock: the fake one's mutex would be measured too.
	c, err := New(Options{})
	if err != nil {
		b.Fatal(err)
	}
	fetch := func(context.Context) (Fetched, error) {
		return Fetched{AccessToken: "token", ExpiresAt: time.Now().Add(time.Hour)}, nil
	}
	if err := c.Register(testApp("graph-api", fetch)); err != nil {
		b.Fatal(err)
	}
	if _, err := c.Token(b.Context(), "graph-api"); err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkTokenHit is the hot path: a valid token in L1.
func BenchmarkTokenHit(b *testing.B) {
	c := newBenchCache(b)
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Token(ctx, "graph-api"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTokenHitParallel is the hot path under GOMAXPROCS goroutines.
func BenchmarkTokenHitParallel(b *testing.B) {
	c := newBenchCache(b)
	ctx := b.Context()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Token(ctx, "graph-api"); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
