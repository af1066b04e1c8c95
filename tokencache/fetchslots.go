package tokencache

import "context"

// DefaultFetchConcurrency is Options.FetchConcurrency's default.
const DefaultFetchConcurrency = 16

// fetchSlots bounds the token requests a Cache runs at once, so a replica
// warming a thousand applications sends them a few at a time. Background
// refreshes hold at most half, so a waiting request never queues behind
// more; so do exchanges (anyone can write a user token), so client
// credentials always have half.
type fetchSlots struct {
	all        chan struct{}
	background chan struct{}
	exchange   chan struct{}
}

func newFetchSlots(n int) *fetchSlots {
	share := max(n/2, 1)
	return &fetchSlots{all: make(chan struct{}, n), background: make(chan struct{}, share), exchange: make(chan struct{}, share)}
}

// Context marks: a background refresh's flight, an exchange, and a fetch
// whose caller holds its slot (see Cache.tryLock).
type (
	backgroundKey struct{}
	exchangeKey   struct{}
	slotKey       struct{}
)

// acquire waits for a slot (and one of the share ctx's kind takes) and
// returns its release, or ctx's error.
func (s *fetchSlots) acquire(ctx context.Context) (release func(), err error) {
	release, _, err = s.acquireUnless(ctx, nil)
	return release, err
}

// acquireUnless is acquire that gives up, with woken true and no slot, if
// wake is closed first.
func (s *fetchSlots) acquireUnless(ctx context.Context, wake <-chan struct{}) (release func(), woken bool, err error) {
	var share chan struct{}
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
