package redisstore

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-entra/caddy-entra/tokencache"
)

// The shared subscription: one attempt's timeout, and the pause between
// attempts (doubling to the max).
const (
	subscribeTimeout       = 5 * time.Second
	subscribeRetryInterval = 100 * time.Millisecond
	subscribeRetryMax      = 5 * time.Second
)

// Publish announces on channel: this store's publisher ID (its watchers
// skip their own), then, if rec is not nil (and within
// tokencache.MaxRecordBytes), a newline and rec as Set stores it.
func (s *Store) Publish(ctx context.Context, key, channel string, rec *tokencache.Record) error {
	message := s.publisherID
	if rec != nil {
		if raw, err := s.marshal(key, rec, tokencache.MaxRecordBytes, "record"); err == nil {
			message += "\n" + string(raw)
		}
	}
	return s.do(ctx, "publishing update", func(ctx context.Context) error {
		return s.client.Publish(ctx, channel, message).Err()
	})
}

// Watch registers a lasting watcher of other stores' announcements on
// channel. The store holds one pattern subscription (KeyPrefix + "*:updated"),
// started by the first Watch and kept until Close; Watch waits for it to
// be confirmed until OpTimeout after the first Watch, so that a config
// load with Redis down waits that once, not once per key.
func (s *Store) Watch(ctx context.Context, key, channel string) (<-chan *tokencache.Record, func()) {
	updates, cancel := s.watchers.add(key, channel)
	s.subMu.Lock()
	if s.subReady == nil && !s.closed {
		s.subReady, s.subWait = make(chan struct{}), time.Now().Add(s.opTimeout)
		s.subDone = make(chan struct{})
		var subCtx context.Context
		subCtx, s.subCancel = context.WithCancel(context.Background())
		go s.runSubscription(subCtx, s.subReady, s.subDone)
	}
	ready, wait := s.subReady, s.subWait
	s.subMu.Unlock()
	if ready != nil {
		timer := time.NewTimer(time.Until(wait))
		defer timer.Stop()
		select {
		case <-ready:
		case <-timer.C:
		case <-ctx.Done():
		}
	}
	return updates, cancel
}

// updatePattern is the PSUBSCRIBE pattern of the prefix's update channels.
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

// runSubscription subscribes (retrying), closes ready once confirmed, then
// dispatches announcements until ctx ends.
func (s *Store) runSubscription(ctx context.Context, ready, done chan struct{}) {
	defer close(done)
	pause := subscribeRetryInterval
	for {
		sub, err := s.subscribe(ctx)
		if err == nil {
			close(ready)
			s.follow(ctx, sub)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, subscribeRetryMax)
	}
}

// subscribe makes the pattern subscription, confirmed.
func (s *Store) subscribe(ctx context.Context) (*redis.PubSub, error) {
	attemptCtx, cancel := context.WithTimeout(ctx, subscribeTimeout)
	defer cancel()
	sub := s.client.PSubscribe(attemptCtx, s.updatePattern())
	if _, err := sub.Receive(attemptCtx); err != nil { // the PSUBSCRIBE confirmation
		_ = sub.Close()
		return nil, err
	}
	return sub, nil
}

// follow dispatches sub's announcements until ctx ends, renewing sub every
// MaxConnectionAge if set, so no connection outlives its password. The old
// one is read on for half of that, so that no announcement is lost between
// the two (one dispatched twice is taken as one).
func (s *Store) follow(ctx context.Context, sub *redis.PubSub) {
	var renew <-chan time.Time
	if s.maxConnectionAge > 0 {
		ticker := time.NewTicker(s.maxConnectionAge)
		defer ticker.Stop()
		renew = ticker.C
	}
	messages := sub.Channel()
	var retiring *redis.PubSub
	var retiringMessages <-chan *redis.Message
	var retire <-chan time.Time
	defer func() {
		_ = sub.Close()
		if retiring != nil {
			_ = retiring.Close()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-renew:
			next, err := s.subscribe(ctx)
			if err != nil {
				continue
			}
			if retiring != nil {
				_ = retiring.Close()
			}
			retiring, retiringMessages, retire = sub, messages, time.After(s.maxConnectionAge/2)
			sub, messages = next, next.Channel()
		case <-retire:
			_ = retiring.Close()
			retiring, retiringMessages, retire = nil, nil, nil
		case msg, ok := <-retiringMessages:
			if !ok {
				retiringMessages = nil
				continue
			}
			s.dispatch(msg)
		case msg, ok := <-messages:
			if !ok {
				return
			}
			s.dispatch(msg)
		}
	}
}

// dispatch hands another store's announcement within
// tokencache.MaxAnnouncementBytes to the watchers of its channel.
func (s *Store) dispatch(msg *redis.Message) {
	s.answers.note()
	publisher, raw, _ := strings.Cut(msg.Payload, "\n")
	if publisher != s.publisherID && len(msg.Payload) <= tokencache.MaxAnnouncementBytes {
		s.watchers.notify(msg.Channel, raw, s.decode)
	}
}

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

// watchers are a store's watchers by channel, each with its record key.
type watchers struct {
	mu  sync.Mutex
	set map[string]map[chan *tokencache.Record]string
}

func (w *watchers) add(key, channel string) (<-chan *tokencache.Record, func()) {
	ch := make(chan *tokencache.Record, 1)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.set == nil {
		w.set = make(map[string]map[chan *tokencache.Record]string)
	}
	if w.set[channel] == nil {
		w.set[channel] = make(map[chan *tokencache.Record]string)
	}
	w.set[channel][ch] = key
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			w.mu.Lock()
			defer w.mu.Unlock()
			delete(w.set[channel], ch)
			if len(w.set[channel]) == 0 {
				delete(w.set, channel)
			}
		})
	}
}

// notify gives the watchers on channel the record raw holds (nil if none
// or it does not decode), replacing one not yet received. Only the
// subscription's goroutine calls it, so a drained buffer stays free.
func (w *watchers) notify(channel, raw string, decode func(key string, raw []byte) (*tokencache.Record, error)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ch, key := range w.set[channel] {
		var rec *tokencache.Record
		if raw != "" {
			rec, _ = decode(key, []byte(raw)) // nil on failure: the watcher reads the store
		}
		select {
		case <-ch: // the latest announcement replaces an older one
		default:
		}
		ch <- rec
	}
}
