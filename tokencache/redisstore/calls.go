package redisstore

import (
	"context"
	"errors"
	"net"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// op starts one call to Redis: it waits for one of the calls the store
// runs at once (as many as its connection pool holds), then gives the call
// OpTimeout. Time spent queued behind this process's own calls does not
// count against OpTimeout, so a replica warming a thousand keys does not
// take its own burst for a Redis that is down. If ctx ends while waiting,
// the call fails at once with ctx's error.
func (s *Store) op(ctx context.Context) (context.Context, context.CancelFunc) {
	return s.opWithin(ctx, s.opTimeout, s.opTimeout)
}

// opWithin is op with timeout instead of OpTimeout, or busyTimeout when
// other calls of this store are waiting for Redis as it is sent.
func (s *Store) opWithin(ctx context.Context, timeout, busyTimeout time.Duration) (context.Context, context.CancelFunc) {
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx, func() {}
	}
	if len(s.slots) > 1 {
		timeout = busyTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	return ctx, func() { cancel(); <-s.slots }
}

// poolSize is the size of client's connection pool (per node for a
// cluster); go-redis's default, 10 per GOMAXPROCS, for another client.
func poolSize(client redis.UniversalClient) int {
	switch c := client.(type) {
	case *redis.Client:
		return c.Options().PoolSize
	case *redis.ClusterClient:
		return c.Options().PoolSize
	}
	return 10 * runtime.GOMAXPROCS(0)
}

// opAttempts is how many attempts of a read, a write, a lock attempt or an
// announcement may time out while Redis answers none of this store's
// other calls before the call fails: a hung Redis costs such a call at
// most opAttempts×OpTimeout.
const opAttempts = 3

// slowOpTimeouts×OpTimeout (1.6 s by default) is the time of an attempt
// sent behind this store's other calls; a call's attempts take at most
// slowCallOpTimeouts×OpTimeout (10 s) in all.
const (
	slowOpTimeouts     = 16
	slowCallOpTimeouts = 100
)

// retryingTimeouts runs call, each attempt as one op, until it succeeds,
// fails otherwise than by timing out, or ctx ends.
//
// A timeout is evidence that Redis is down only when, while the attempt
// waited, Redis answered none of this store's calls and no other call of
// this store was waiting for Redis: opAttempts such attempts fail the
// call. Any other timeout is not a Redis that is down: the attempt waited
// behind this process's own calls (a replica warming a thousand keys, on
// a machine short of CPU), in Redis's queue or the kernel's. It is sent
// again, within the bounds above, so that the replica keeps sharing its
// tokens. An attempt sent while other calls wait is given the longer time:
// every timeout costs a connection (go-redis closes it), and a fleet
// warming up must not spend its CPU reconnecting.
//
// Once a call has failed so, the store counts as down until Redis answers
// again: every timeout is then evidence and every attempt gets OpTimeout,
// so that an outage costs each call opAttempts×OpTimeout, not more.
func (s *Store) retryingTimeouts(ctx context.Context, call func(context.Context) error) error {
	var spent time.Duration
	silent := 0
	for {
		busy := slowOpTimeouts * s.opTimeout
		down := s.answers.down.Load()
		if down {
			busy = s.opTimeout
		}
		opCtx, done := s.opWithin(ctx, s.opTimeout, busy)
		sent, began := s.answers.now(), time.Now()
		err := call(opCtx)
		others := len(s.slots) > 1
		done()
		if err == nil || ctx.Err() != nil || !isTimeout(err) {
			return err
		}
		spent += time.Since(began)
		if !s.answers.since(sent) && (down || !others) {
			silent++
		}
		if silent >= opAttempts || spent >= slowCallOpTimeouts*s.opTimeout {
			s.answers.down.Store(true)
			return err
		}
	}
}

// isTimeout reports whether err is a call's deadline or a network timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// answers records when Redis last answered one of a store's calls (a
// reply, an error reply included) or delivered an announcement: a
// redis.Hook on the store's client.
type answers struct {
	born time.Time
	last atomic.Int64 // since born
	// down is set when a call failed by its timeouts, until the next answer.
	down atomic.Bool
}

func newAnswers() *answers { return &answers{born: time.Now()} }

// now is the time since born.
func (a *answers) now() int64 { return int64(time.Since(a.born)) }

// note records an answer now.
func (a *answers) note() {
	a.last.Store(a.now())
	a.down.Store(false)
}

// since reports whether Redis answered after t (from now).
func (a *answers) since(t int64) bool { return a.last.Load() > t }

func (a *answers) DialHook(next redis.DialHook) redis.DialHook { return next }

func (a *answers) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if isAnswer(err) && !isHandshake(cmd.Name()) {
			a.note()
		}
		return err
	}
}

func (a *answers) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		if isAnswer(err) && !isHandshake(cmds[0].Name()) {
			a.note()
		}
		return err
	}
}

// isAnswer reports whether a call that returned err got Redis's reply.
func isAnswer(err error) bool {
	var reply redis.Error
	return err == nil || errors.As(err, &reply)
}

// isHandshake reports whether a command is part of a new connection's
// handshake, answered by a Redis that may not answer anything else.
func isHandshake(name string) bool {
	switch name {
	case "hello", "auth", "client", "select", "readonly":
		return true
	}
	return false
}
