package tokencache

import (
	"context"
	"testing"
	"time"
)

func newBenchHandle(b *testing.B) *Handle {
	// The real clock: the fake one's mutex would be measured too.
	c, err := New(Options{})
	if err != nil {
		b.Fatal(err)
	}
	fetch := func(context.Context) (Fetched, error) {
		return Fetched{AccessToken: "token", ExpiresAt: time.Now().Add(time.Hour)}, nil
	}
	h, err := c.Register(testApp("graph-api", fetch))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := h.Token(b.Context()); err != nil {
		b.Fatal(err)
	}
	return h
}

// BenchmarkTokenHit is the hot path: a valid token in L1.
func BenchmarkTokenHit(b *testing.B) {
	h := newBenchHandle(b)
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h.Token(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTokenHitParallel is the hot path under GOMAXPROCS goroutines.
func BenchmarkTokenHitParallel(b *testing.B) {
	h := newBenchHandle(b)
	ctx := b.Context()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := h.Token(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
