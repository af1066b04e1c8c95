package tokencache

import "context"

// DefaultFetchConcurrency is Options.FetchConcurrency's default.
const DefaultFetchConcurrency = 16

// fetchSlots bounds the token requests one Cache runs at once, so that a
// replica warming a thousand applications (prefetch at start, or a burst
// of cold misses) sends them a few at a time instead of all together.
// Background refreshes, prefetch included, hold at most half of the slots,
// so a request waiting for a token never queues behind more than that.
type fetchSlots struct {
	all        chan struct{}
	background chan struct{}
}

func newFetchSlots(n int) *fetchSlots {
	return &fetchSlots{all: make(chan struct{}, n), background: make(chan struct{}, max(n/2, 1))}
}

// backgroundKey marks the context of a background refresh's flight.
type backgroundKey struct{}

func withBackground(ctx context.Context) context.Context {
	return context.WithValue(ctx, backgroundKey{}, true)
}

// acquire waits for a slot (a background one too for a background flight's
// ctx) and returns its release, or ctx's error.
func (s *fetchSlots) acquire(ctx context.Context) (release func(), err error) {
	background := ctx.Value(backgroundKey{}) != nil
	if background {
		if err := take(ctx, s.background); err != nil {
			return nil, err
		}
	}
	if err := take(ctx, s.all); err != nil {
		if background {
			<-s.background
		}
		return nil, err
	}
	return func() {
		<-s.all
		if background {
			<-s.background
		}
	}, nil
}

func take(ctx context.Context, slots chan struct{}) error {
	select {
	case slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
