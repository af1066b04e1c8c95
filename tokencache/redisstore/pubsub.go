package redisstore

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/caddy-entra/caddy-entra/tokencache"
)

// The shared subscription: how long one attempt to subscribe may take, and
// the pause between attempts (doubling up to the max) while Redis is away.
const (
	subscribeTimeout       = 5 * time.Second
	subscribeRetryInterval = 100 * time.Millisecond
	subscribeRetryMax      = 5 * time.Second
)

// Publish announces on channel (PUBLISH, which Redis Cluster forwards to
// every node), with this store's publisher ID as the message, so that its
// own watchers can tell it from other processes' (see Watch).
func (s *Store) Publish(ctx context.Context, channel string) error {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	if err := s.client.Publish(ctx, channel, s.publisherID).Err(); err != nil {
		return fmt.Errorf("tokencache: publishing update: %w", err)
	}
	return nil
}

// Subscribe registers a waiter on channel. The store holds one
// subscription, on the pattern KeyPrefix + "*" + ":updated" over one
// connection, started by the first Subscribe and kept (go-redis reconnects
// it) until Close; it is not made per waiter. Subscribe waits at most
// OpTimeout for it to be confirmed. Waiters registered before it is
// confirmed are woken once when it is (they then look at the store), so no
// announcement falls into the gap; if it cannot be made, waiters poll.
func (s *Store) Subscribe(ctx context.Context, channel string) (<-chan struct{}, func()) {
	updates, cancel := s.updates.subscribe(channel)
	s.awaitSubscription(ctx)
	return updates, cancel
}

// Watch registers a lasting subscriber on channel: it is woken by
// announcements that other processes (other stores) publish, not by this
// store's own, and not when the shared subscription is confirmed. It
// waits for the subscription as Subscribe does.
func (s *Store) Watch(ctx context.Context, channel string) (<-chan struct{}, func()) {
	updates, cancel := s.updates.watch(channel)
	s.awaitSubscription(ctx)
	return updates, cancel
}

// updatePattern is the PSUBSCRIBE pattern of every update channel under the
// prefix, its glob characters escaped.
func (s *Store) updatePattern() string {
	var b strings.Builder
	for _, r := range s.keyPrefix {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String() + "*:updated" // see tokencache.UpdateChannel
}

// awaitSubscription starts the shared subscription if needed and waits at
// most OpTimeout for it to be confirmed.
func (s *Store) awaitSubscription(ctx context.Context) {
	s.subMu.Lock()
	if s.subReady == nil && !s.closed {
		s.subReady = make(chan struct{})
		s.subDone = make(chan struct{})
		var subCtx context.Context
		subCtx, s.subCancel = context.WithCancel(context.Background())
		go s.runSubscription(subCtx, s.subReady, s.subDone)
	}
	ready := s.subReady
	s.subMu.Unlock()
	if ready == nil {
		return
	}
	timer := time.NewTimer(s.opTimeout)
	defer timer.Stop()
	select {
	case <-ready:
	case <-timer.C:
	case <-ctx.Done():
	}
}

// runSubscription subscribes (retrying while Redis is away), closes ready
// once confirmed, wakes the waiters registered meanwhile, then dispatches
// announcements until ctx ends.
func (s *Store) runSubscription(ctx context.Context, ready, done chan struct{}) {
	defer close(done)
	pause := subscribeRetryInterval
	for {
		attemptCtx, cancel := context.WithTimeout(ctx, subscribeTimeout)
		sub := s.client.PSubscribe(attemptCtx, s.updatePattern())
		_, err := sub.Receive(attemptCtx) // the PSUBSCRIBE confirmation
		cancel()
		if err == nil {
			// Wake the waiters registered before the confirmation first, then
			// release Subscribe: a waiter that returns from Subscribe after
			// ready is closed can miss no announcement and gets no stray wake.
			s.updates.notifyAll()
			close(ready)
			messages := sub.Channel()
			for {
				select {
				case <-ctx.Done():
					_ = sub.Close()
					return
				case msg, ok := <-messages:
					if !ok {
						return
					}
					if len(msg.Payload) > tokencache.MaxAnnouncementBytes {
						continue // no replica sends it: ignored
					}
					if msg.Payload == s.publisherID {
						s.updates.notify(msg.Channel) // our own: our watchers know
					} else {
						s.updates.notifyForeign(msg.Channel)
					}
				}
			}
		}
		_ = sub.Close()
		if s.subscribeErr != nil {
			s.subscribeErr(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, subscribeRetryMax)
	}
}

// stopSubscription ends the shared subscription and waits for its
// goroutine.
func (s *Store) stopSubscription() {
	s.subMu.Lock()
	s.closed = true
	cancel, done := s.subCancel, s.subDone
	s.subMu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}
