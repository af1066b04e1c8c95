package tokencache

import (
	"context"
	"strings"
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

// BenchmarkExchangeHit is the on-behalf-of hot path beside BenchmarkTokenHit:
// a user token whose exchanged token is in the Exchanger's L1 (the keyed
// hash of the user token, then the bounded map).
func BenchmarkExchangeHit(b *testing.B) {
	c, err := New(Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	e, err := c.NewExchanger(ExchangeOptions{Name: "graph-as-user", Identity: testCacheKey, Scopes: []string{testScope}})
	if err != nil {
		b.Fatal(err)
	}
	exchange := func(context.Context) (Fetched, error) {
		return Fetched{AccessToken: "token", ExpiresAt: time.Now().Add(time.Hour)}, nil
	}
	// A user token of a realistic size (Entra's are 1.5 to 3 KB).
	userToken := "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9." + strings.Repeat("eyJhdWQiOiJhcGk6Ly9teS1hcGkifQ", 60) + ".c2lnbmF0dXJl"
	notAfter := time.Now().Add(time.Hour)
	ctx := b.Context()
	if _, err := e.Exchange(ctx, userToken, testTenant, notAfter, exchange); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Exchange(ctx, userToken, testTenant, notAfter, exchange); err != nil {
			b.Fatal(err)
		}
	}
}
