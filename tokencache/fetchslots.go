package tokencache

import "context"

// DefaultFetchConcurrency is Options.FetchConcurrency's default.
const DefaultFetchConcurrency = 16

// fetchSlots bounds the token requests one Cache runs at once, so that a
// replica warming a thousand applications (prefetch at start, or a burst
// of cold misses) sends them a few at a time instead of all together.
// Background refreshes, prefetch included, hold at most half of the slots,
// so a request waiting for a token never queues behind more than that; so
// do the exchanges of on-behalf-of applications (their user tokens come
// from outside, anyone can write one), so that client-credential requests
// always have half (with a single slot, exchanges may take it).
type fetchSlots struct {
	all        chan struct{}
	background chan struct{}
	exchange   chan struct{}
}

func newFetchSlots(n int) *fetchSlots {
	share := max(n/2, 1)
	return &fetchSlots{all: make(chan struct{}, n), background: make(chan struct{}, share), exchange: make(chan struct{}, share)}
}

// backgroundKey marks the context of a background refresh's flight.
type backgroundKey struct{}

func withBackground(ctx context.Context) context.Context {
	return context.WithValue(ctx, backgroundKey{}, true)
}

// exchangeKey marks the context of an exchange.
type exchangeKey struct{}

func withExchange(ctx context.Context) context.Context {
	return context.WithValue(ctx, exchangeKey{}, true)
}

// slotKey marks the context of a fetch whose caller holds its slot (see
// Cache.tryLock).
type slotKey struct{}

func withSlot(ctx context.Context) context.Context { return context.WithValue(ctx, slotKey{}, true) }

func holdsSlot(ctx context.Context) bool { return ctx.Value(slotKey{}) != nil }

// acquire waits for a slot (a background one too for a background
// flight's ctx, an exchange one for an exchange's) and returns its
// release, or ctx's error.
func (s *fetchSlots) acquire(ctx context.Context) (release func(), err error) {
	release, _, err = s.acquireUnless(ctx, nil)
	return release, err
}

// acquireUnless is acquire that gives up, with woken true and no slot, if
// wake is closed first.
func (s *fetchSlots) acquireUnless(ctx context.Context, wake <-chan struct{}) (release func(), woken bool, err error) {
	var share chan struct{} // the bounded part of the slots ctx's fetch takes from
	switch {
	case ctx.Value(backgroundKey{}) != nil:
		share = s.background
	case ctx.Value(exchangeKey{}) != nil:
		share = s.exchange
	}
	if share != nil {
		if woken, err := take(ctx, share, wake); woken || err != nil {
			return nil, woken, err
		}
	}
	if woken, err := take(ctx, s.all, wake); woken || err != nil {
		if share != nil {
			<-share
		}
		return nil, woken, err
	}
	return func() {
		<-s.all
		if share != nil {
			<-share
		}
	}, false, nil
}

func take(ctx context.Context, slots chan struct{}, wake <-chan struct{}) (woken bool, err error) {
	select {
	case slots <- struct{}{}:
		return false, nil
	default:
	}
	select {
	case slots <- struct{}{}:
		return false, nil
	case <-wake:
		return true, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}
