package redisstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// op starts one call to Redis: it waits for one of the calls the store
// runs at once (as many as its pool holds), then gives the call timeout, or
// busyTimeout when other calls wait for Redis, and returns the time given.
// Time queued behind this process's own calls does not count, so a replica
// warming a thousand keys does not take its own burst for a Redis that is
// down. If ctx ends while waiting, the call fails at once with ctx's error.
func (s *Store) op(ctx context.Context, timeout, busyTimeout time.Duration) (context.Context, time.Duration, context.CancelFunc) {
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx, timeout, func() {}
	}
	if len(s.slots) > 1 {
		timeout = busyTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	return ctx, timeout, func() { cancel(); <-s.slots }
}

// poolSize is client's connection pool size (per node for a cluster).
func poolSize(client redis.UniversalClient) int {
	switch c := client.(type) {
	case *redis.Client:
		return c.Options().PoolSize
	case *redis.ClusterClient:
		return c.Options().PoolSize
	}
	return 10 * runtime.GOMAXPROCS(0)
}

// In OpTimeouts: a call fails after opAttempts timeouts that show a hung
// Redis; an attempt sent behind this store's other calls gets
// slowOpTimeouts (1.6 s by default), and a call's attempts slowCallOpTimeouts
// (10 s) in all.
const (
	opAttempts         = 3
	slowOpTimeouts     = 16
	slowCallOpTimeouts = 100
)

// now is retryingTimeouts' clock (a fake one in tests).
var now = time.Now

// retryingTimeouts runs call, each attempt as one op, until it succeeds,
// fails otherwise than by timing out, or ctx ends.
//
// A timeout shows Redis is down only when, meanwhile, Redis answered none
// of this store's calls, no other call was waiting or the attempt waited
// for a dial (a blackholed Redis), and this process noticed the deadline
// within the attempt's time after it: opAttempts of those fail the call.
// Any other timeout waited behind this process's own work (a replica
// warming a thousand keys on a busy machine, or starved of CPU for longer
// than Redis had to answer, which may leave an answer unread) and is sent
// again, with the longer time when others wait (each timeout costs
// go-redis a connection), so the replica keeps sharing its tokens. Once a
// call has failed so, the store counts as down until Redis
// answers: every attempt then gets OpTimeout and every timeout counts.
func (s *Store) retryingTimeouts(ctx context.Context, call func(context.Context) error) error {
	var spent time.Duration
	silent := 0
	for {
		busy := slowOpTimeouts * s.opTimeout
		down := s.answers.down.Load()
		if down || s.answers.dialing.Load() {
			busy = s.opTimeout
		}
		opCtx, given, done := s.op(ctx, s.opTimeout, busy)
		sent, began, noConn := s.answers.now(), now(), s.noConnection()
		err := call(opCtx)
		others := len(s.slots) > 1
		done()
		if err == nil || ctx.Err() != nil || !isTimeout(err) {
			return err
		}
		took := now().Sub(began)
		spent += took
		late := took > 2*given
		// No connection open and none dialled since: the attempt waited for
		// a dial, never behind this process's other calls.
		waitedForDial := noConn && s.answers.dialed.Load() <= sent
		if waitedForDial {
			s.answers.dialing.Store(true)
		}
		if !s.answers.since(sent) && (down || (waitedForDial || !others) && !late) {
			silent++
		}
		if silent >= opAttempts || spent >= slowCallOpTimeouts*s.opTimeout {
			s.answers.down.Store(true)
			return err
		}
	}
}

// noConnection reports whether no connection to Redis is open; false for a
// Cluster, whose PoolStats may wait for Redis to load the slots.
func (s *Store) noConnection() bool {
	client, ok := s.client.(*redis.Client)
	return ok && client.PoolStats().TotalConns == 0
}

// do runs call through retryingTimeouts; its error says what it was doing.
func (s *Store) do(ctx context.Context, doing string, call func(context.Context) error) error {
	if err := s.retryingTimeouts(ctx, call); err != nil {
		return fmt.Errorf("tokencache: %s: %w", doing, err)
	}
	return nil
}

// isTimeout reports whether err is a call's deadline or a network timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// answers records when Redis last answered one of a store's calls (an
// error reply too) or delivered an announcement, and when a connection was
// last dialled (its TCP connection made, see connectedKey): a redis.Hook.
type answers struct {
	born    time.Time
	last    atomic.Int64 // since born
	down    atomic.Bool  // a call failed by its timeouts, until the next answer
	dialed  atomic.Int64 // since born
	dialing atomic.Bool  // an attempt waited for a dial, until one succeeds
}

func (a *answers) now() int64 { return int64(time.Since(a.born)) }

func (a *answers) note() {
	a.last.Store(a.now())
	a.down.Store(false)
}

func (a *answers) since(t int64) bool { return a.last.Load() > t }

// connected notes that a connection to Redis was made.
func (a *answers) connected() {
	a.dialed.Store(a.now())
	a.dialing.Store(false)
}

// connectedKey is the context key of the func a store's dials call once
// the TCP connection is made (see tlsDialer): a TLS handshake needs Redis's
// event loop, which a healthy Redis may stall for seconds (a fork, a slow
// command), so a dial that waits for it does not show a blackholed Redis.
type connectedKey struct{}

func (a *answers) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := next(context.WithValue(ctx, connectedKey{}, a.connected), network, addr)
		if err == nil {
			a.connected()
		}
		return conn, err
	}
}

func (a *answers) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		a.noteAnswer(err, cmd)
		return err
	}
}

func (a *answers) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		a.noteAnswer(err, cmds[0])
		return err
	}
}

// noteAnswer notes Redis's reply to cmd, which returned err (an error
// reply too), unless cmd is part of a connection's handshake, which a
// Redis that answers nothing else may answer.
func (a *answers) noteAnswer(err error, cmd redis.Cmder) {
	var reply redis.Error
	if err != nil && !errors.As(err, &reply) {
		return
	}
	switch cmd.Name() {
	case "hello", "auth", "client", "select", "readonly":
		return
	}
	a.note()
}
