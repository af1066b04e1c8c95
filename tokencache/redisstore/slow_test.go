package redisstore

import (
	"context"
	"fmt"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/caddy-entra/caddy-entra/tokencache"
)

// slowHook makes Redis slow: each command (a connection's handshake
// aside) of the first `slow` waits for
// delay (or its deadline) before it is sent; with lost set, the first
// command is sent and its answer lost, as when a reply arrives too late.
type slowHook struct {
	passThrough
	slow  int64
	delay time.Duration
	lost  bool
	calls atomic.Int64
	// lostRan is set when the first command, whose answer is lost, ran.
	lostRan atomic.Bool
	// answering, once set, ends the slow answers.
	answering atomic.Bool
}

func (h *slowHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		switch cmd.Name() {
		case "hello", "client", "ping":
			return next(ctx, cmd) // a new connection's handshake
		}
		n := h.calls.Add(1)
		if n == 1 && h.lost {
			// Run whatever the attempt's deadline (a loaded machine may
			// spend it before Redis answers): only its answer is lost.
			h.lostRan.Store(next(context.WithoutCancel(ctx), cmd) == nil)
			cmd.SetErr(context.DeadlineExceeded)
			return context.DeadlineExceeded
		}
		if n <= h.slow && !h.answering.Load() {
			select {
			case <-time.After(h.delay):
			case <-ctx.Done():
				cmd.SetErr(ctx.Err())
				return ctx.Err()
			}
		}
		return next(ctx, cmd)
	}
}

// passThrough gives a test's redis.Hook the dial and pipeline hooks that
// change nothing: it changes single commands only.
type passThrough struct{}

func (passThrough) DialHook(next redis.DialHook) redis.DialHook { return next }
func (passThrough) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func slowStore(t *testing.T, hook redis.Hook, poolSize int) (*Store, *miniredis.Miniredis) {
	t.Helper()
	mr := miniredis.RunT(t)
	client := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true, PoolSize: poolSize})
	client.AddHook(hook)
	store, err := newStore(client, Options{OpTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	return store, mr
}

// One slow answer is not a Redis that is down: a read, a write, a lock
// attempt and an announcement that time out once are sent again.
func TestASlowAnswerIsSentAgain(t *testing.T) {
	ctx := t.Context()
	rec := &tokencache.Record{ID: "k", AccessToken: "t", AccessTokenExpiresAt: time.Now().Add(time.Hour)}
	for name, call := range map[string]func(*Store) error{
		"set": func(s *Store) error { return s.Set(ctx, "k", rec, time.Hour) },
		"get": func(s *Store) error { _, err := s.Get(ctx, "k"); return err },
		"lock": func(s *Store) error {
			_, ok, err := s.TryLock(ctx, "lock", time.Minute)
			if err == nil && !ok {
				t.Error("lock not taken")
			}
			return err
		},
		"publish": func(s *Store) error { return s.Publish(ctx, "c:token", "c:updated", nil) },
	} {
		t.Run(name, func(t *testing.T) {
			hook := &slowHook{slow: 1, delay: time.Second}
			store, mr := slowStore(t, hook, 0)
			mr.Set("k", "")
			if name == "get" {
				if err := store.Set(ctx, "k", rec, time.Hour); err != nil {
					t.Fatal(err)
				}
				hook.calls.Store(0)
			}
			if err := call(store); err != nil {
				t.Fatalf("%s after one slow answer: %v", name, err)
			}
			if hook.calls.Load() < 2 {
				t.Errorf("%s: %d calls, want the slow one sent again", name, hook.calls.Load())
			}
		})
	}

	// A Redis that stays slow fails the call after opAttempts. The
	// attempts' clock stands still, so that a timeout this busy machine
	// notices late (which is sent again: TestATimeoutNoticedLateIsNotEvidence)
	// cannot add an attempt.
	useFakeNow(t)
	hook := &slowHook{slow: 100, delay: time.Second}
	store, _ := slowStore(t, hook, 0)
	start := time.Now()
	if _, err := store.Get(ctx, "k"); err == nil || !isTimeout(err) {
		t.Errorf("Get on a hung Redis: %v, want a timeout", err)
	}
	if got := hook.calls.Load(); got != opAttempts {
		t.Errorf("hung Redis: %d attempts, want %d", got, opAttempts)
	}
	if took := time.Since(start); took > time.Duration(opAttempts)*time.Second/2 {
		t.Errorf("hung Redis: Get took %s, want about %d×OpTimeout", took, opAttempts)
	}
}

// A lock attempt whose answer was lost may have taken the lock: the next
// attempt finds it held by its own owner and takes it, instead of waiting
// LockTTL for a lock nobody uses.
func TestALockWhoseAnswerWasLostIsOurs(t *testing.T) {
	store, mr := slowStore(t, &slowHook{lost: true}, 0)
	owner, ok, err := store.TryLock(t.Context(), "lock", time.Minute)
	if err != nil || !ok {
		t.Fatalf("TryLock = %v, %v", ok, err)
	}
	if held, _ := mr.Get("lock"); held != owner {
		t.Errorf("lock holds %q, want the returned owner %q", held, owner)
	}
	// Another owner's lock is not taken for ours.
	if _, ok, err := store.TryLock(t.Context(), "lock", time.Minute); err != nil || ok {
		t.Errorf("second TryLock = %v, %v; want not taken", ok, err)
	}
}

// slowConn delays each answer of Redis by delay, once enabled: a server
// that takes that long per command.
type slowConn struct {
	net.Conn
	delay   time.Duration
	enabled *atomic.Bool
	wrote   atomic.Bool
}

func (c *slowConn) Write(p []byte) (int, error) {
	c.wrote.Store(true)
	return c.Conn.Write(p)
}

func (c *slowConn) Read(p []byte) (int, error) {
	if c.wrote.Swap(false) && c.enabled.Load() {
		time.Sleep(c.delay) // the server's time to answer
	}
	return c.Conn.Read(p)
}

// Calls queued behind this process's own calls are not timed out by the
// wait: on one connection to a Redis that takes 120 ms per command, 4
// concurrent calls take 480 ms, more than the 300 ms OpTimeout, and each
// succeeds at its first attempt. (Each command keeps 180 ms to spare for a
// busy machine: one that timed out would be sent again on a new connection
// whose handshake is slow too, and so time out again.)
func TestQueuedCallsAreNotTimedOutByTheQueue(t *testing.T) {
	mr := miniredis.RunT(t)
	var enabled atomic.Bool
	var sent atomic.Int64
	client := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true, PoolSize: 1,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &slowConn{Conn: conn, delay: 120 * time.Millisecond, enabled: &enabled}, nil
		}})
	client.AddHook(&countHook{n: &sent})
	store, err := newStore(client, Options{OpTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	if err := store.Ping(t.Context()); err != nil { // the connection's handshake, not delayed
		t.Fatal(err)
	}
	warmLockScript(t, mr) // one command per lock attempt
	enabled.Store(true)
	sent.Store(0)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := range 4 {
		wg.Go(func() {
			_, _, err := store.TryLock(t.Context(), "lock-"+string(rune('a'+i)), time.Minute)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if got := sent.Load(); got != 4 {
		t.Errorf("%d commands sent, want 4 (none timed out and sent again)", got)
	}
}

// countHook counts the commands sent.
type countHook struct {
	passThrough
	n *atomic.Int64
}

func (h *countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

// keyHook holds the first `times` commands on key until their deadline,
// recording how long each was given.
type keyHook struct {
	passThrough
	key    string
	times  int
	mu     sync.Mutex
	given  []time.Duration
	passed atomic.Int64
}

func (h *keyHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if args := cmd.Args(); len(args) < 2 || args[1] != h.key {
			return next(ctx, cmd)
		}
		h.mu.Lock()
		held := len(h.given) < h.times
		if deadline, ok := ctx.Deadline(); ok && held {
			h.given = append(h.given, time.Until(deadline).Round(time.Millisecond))
		}
		h.mu.Unlock()
		if held {
			<-ctx.Done()
			cmd.SetErr(ctx.Err())
			return ctx.Err()
		}
		h.passed.Add(1)
		// Answered whatever the deadline: on a loaded machine miniredis can
		// take longer than the 10 ms these tests give an attempt, and a
		// second pass would be the machine's doing, not the store's.
		return next(context.WithoutCancel(ctx), cmd)
	}
}

// A call that times out while Redis answers this store's other calls, or
// while other calls of this store wait for Redis, waited behind the
// process's own work, not on a Redis that is down: it is sent again, past
// opAttempts. Sent behind other calls, an attempt has the slow attempt's
// time. (A timeout while Redis
// answers nothing and nothing else waits is evidence: see
// TestASlowAnswerIsSentAgain's hung Redis.)
func TestATimeoutBehindOurOwnCallsIsNotEvidence(t *testing.T) {
	const opTimeout = 10 * time.Millisecond
	rec := &tokencache.Record{ID: "busy", AccessToken: "t", AccessTokenExpiresAt: time.Now().Add(time.Hour)}
	for _, tc := range []struct {
		name           string
		othersAnswered bool // else: another call waits all along, unanswered
	}{{"redis answers other calls", true}, {"other calls wait", false}} {
		t.Run(tc.name, func(t *testing.T) {
			hook := &keyHook{key: "busy", times: opAttempts + 1}
			mr := miniredis.RunT(t)
			client := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
			client.AddHook(hook)
			store, err := newStore(client, Options{OpTimeout: opTimeout})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = store.Close() })
			ctx := t.Context()
			// A connection is open: no attempt waits for a dial. Not through
			// the store, whose 10 ms would fail a dial slowed by -race on a busy machine.
			if err := client.Ping(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			stop := make(chan struct{})
			var others sync.WaitGroup
			if tc.othersAnswered {
				others.Go(func() { // the rest of the replica's burst, answered
					for {
						select {
						case <-stop:
							return
						default:
							_, _ = store.Get(ctx, "other")
						}
					}
				})
			} else {
				store.slots <- struct{}{} // a call of ours that Redis has not answered
				defer func() { <-store.slots }()
			}
			err = store.Set(ctx, "busy", rec, time.Hour)
			close(stop)
			others.Wait()
			if err != nil {
				t.Fatalf("Set behind our own calls: %v", err)
			}
			if hook.passed.Load() != 1 {
				t.Errorf("the write reached Redis %d times, want 1", hook.passed.Load())
			}
			t.Logf("attempts given %v", hook.given)
			for i, given := range hook.given {
				if !tc.othersAnswered && given < slowOpTimeouts*opTimeout*9/10 {
					t.Errorf("attempt %d, sent behind another call, had %v, want %v", i+1, given, slowOpTimeouts*opTimeout)
				}
			}
		})
	}
}

// A Redis that answers nothing while the replica is busy (other calls
// waiting) is taken for down after slowCallOpTimeouts×OpTimeout of
// attempts; from then on, until Redis answers, every call fails after
// opAttempts×OpTimeout, however busy the replica.
func TestAnOutageFoundUnderLoadFailsLaterCallsFast(t *testing.T) {
	const opTimeout = 10 * time.Millisecond
	mr := miniredis.RunT(t)
	client := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	client.AddHook(&slowHook{slow: 1 << 30, delay: time.Hour})
	store, err := newStore(client, Options{OpTimeout: opTimeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	// A connection is open: no attempt waits for a dial (not through the
	// store, whose 10 ms would fail a dial slowed by -race on a busy machine).
	if err := client.Ping(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	store.slots <- struct{}{} // a call of ours that Redis never answers
	defer func() { <-store.slots }()

	start := time.Now()
	if _, err := store.Get(t.Context(), "k"); !isTimeout(err) {
		t.Fatalf("first call to a hung Redis: %v, want a timeout", err)
	}
	first := time.Since(start)
	if first < slowCallOpTimeouts*opTimeout || first > 3*slowCallOpTimeouts*opTimeout {
		t.Errorf("first call failed after %v, want about %v", first, slowCallOpTimeouts*opTimeout)
	}
	start = time.Now()
	if _, err := store.Get(t.Context(), "k"); !isTimeout(err) {
		t.Fatalf("second call: %v, want a timeout", err)
	}
	if second := time.Since(start); second > 10*opAttempts*opTimeout {
		t.Errorf("second call, with the outage known, failed after %v, want about %v", second, opAttempts*opTimeout)
	}
	// Redis answers again (the hook lets PING through; a new connection's
	// dial may take longer than OpTimeout under -race: a few tries).
	for i := 0; store.Ping(t.Context()) != nil; i++ {
		if i == 20 {
			t.Fatal("PING never answered")
		}
	}
	if store.answers.down.Load() {
		t.Error("the store still counts as down after Redis answered")
	}
}

// fakeNow replaces retryingTimeouts' clock until the test ends.
type fakeNow struct {
	mu sync.Mutex
	t  time.Time
}

func useFakeNow(t *testing.T) *fakeNow {
	c := &fakeNow{t: time.Now()}
	t.Cleanup(func() { now = time.Now })
	now = c.Now
	return c
}

func (c *fakeNow) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeNow) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// lateHook times out the first `times` commands on key without sending
// them, each ending `took` after it began on the fake clock; the others go
// through.
type lateHook struct {
	passThrough
	key      string
	times    int
	took     time.Duration
	clock    *fakeNow
	attempts int
}

func (h *lateHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if args := cmd.Args(); len(args) < 2 || args[1] != h.key {
			return next(ctx, cmd)
		}
		h.attempts++
		if h.attempts <= h.times {
			h.clock.Advance(h.took)
			cmd.SetErr(context.DeadlineExceeded)
			return context.DeadlineExceeded
		}
		return next(ctx, cmd)
	}
}

// A timeout this process noticed more than the attempt's time past its
// deadline (starved of CPU for longer than Redis had to answer, it may have
// left an answer unread) is not evidence of a Redis that is down: the call
// is sent again, past opAttempts, and gives up only after
// slowCallOpTimeouts×OpTimeout of such attempts. Timeouts noticed sooner
// still fail the call after opAttempts.
func TestATimeoutNoticedLateIsNotEvidence(t *testing.T) {
	const opTimeout = 100 * time.Millisecond
	for _, tc := range []struct {
		name         string
		timeouts     int
		took         time.Duration
		wantErr      bool
		wantAttempts int
	}{
		{"noticed late", opAttempts + 1, 4 * opTimeout, false, opAttempts + 2},
		{"noticed on time", opAttempts + 1, opTimeout, true, opAttempts},
		{"noticed less than OpTimeout past", opAttempts + 1, 2 * opTimeout, true, opAttempts},
		{"late, for long", 1 << 30, 4 * opTimeout, true, slowCallOpTimeouts / 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := useFakeNow(t)
			hook := &lateHook{key: "k", times: tc.timeouts, took: tc.took, clock: clock}
			mr := miniredis.RunT(t)
			client := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
			client.AddHook(hook)
			store, err := newStore(client, Options{OpTimeout: opTimeout})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = store.Close() })
			mr.Set("k", `{"id":"k","accessToken":"t"}`)

			_, err = store.Get(t.Context(), "k")
			if tc.wantErr && !isTimeout(err) {
				t.Errorf("Get = %v, want a timeout", err)
			}
			if !tc.wantErr && err != nil {
				t.Errorf("Get after %d late timeouts: %v", tc.timeouts, err)
			}
			if hook.attempts != tc.wantAttempts {
				t.Errorf("%d attempts, want %d", hook.attempts, tc.wantAttempts)
			}
			if down := store.answers.down.Load(); down != tc.wantErr {
				t.Errorf("store down = %v, want %v", down, tc.wantErr)
			}
		})
	}
}

// A lock attempt that timed out after taking the lock, in a call that then
// failed, does not leave the lock to stall the fleet for its ttl: once
// Redis answers again the replica releases it.
func TestALockTakenByAFailedAttemptIsReleased(t *testing.T) {
	// The lock attempt's answer is lost, the next calls hang until the
	// call has failed (opAttempts of them, or more on a loaded machine,
	// where a timeout noticed late is not taken for an outage), then Redis
	// answers again.
	hook := &slowHook{lost: true, slow: math.MaxInt64, delay: time.Minute}
	store, mr := slowStore(t, hook, 0)
	warmLockScript(t, mr) // the lost answer is the lock's, not a NOSCRIPT
	if _, ok, err := store.TryLock(t.Context(), "lock", time.Minute); err == nil || ok {
		t.Fatalf("TryLock on a Redis that stopped answering = %v, %v; want a failure", ok, err)
	}
	hook.answering.Store(true)
	// Not mr.Exists: the release may already have run.
	if !hook.lostRan.Load() {
		t.Fatal("the lost attempt did not take the lock: the test proves nothing")
	}
	deadline := time.Now().Add(10 * time.Second)
	for mr.Exists("lock") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // the release retries on its own schedule
	}
	if mr.Exists("lock") {
		t.Error("the abandoned lock is still held: the fleet waits out its ttl")
	}
	// Another owner's lock is never released so.
	mr.Set("other-lock", "another-owner")
	mr.SetTTL("other-lock", time.Minute)
	if _, _, err := store.TryLock(t.Context(), "other-lock", time.Minute); err != nil {
		t.Fatal(err)
	}
	if held, _ := mr.Get("other-lock"); held != "another-owner" {
		t.Errorf("another owner's lock became %q", held)
	}
}

// blackholedClient is a client of a Redis whose packets are dropped: every
// dial waits out its deadline.
func blackholedClient(poolSize int) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: "192.0.2.1:6379", ContextTimeoutEnabled: true, PoolSize: poolSize,
		Dialer: func(ctx context.Context, network, _ string) (net.Conn, error) {
			<-ctx.Done() // the SYN is dropped
			return nil, &net.OpError{Op: "dial", Net: network, Err: ctx.Err()}
		}})
}

// Calls made at once to a blackholed Redis each fail after opAttempts
// attempts (the first given the time of one sent behind others, the next
// OpTimeout): an attempt that waited for a dial did not wait behind the
// others. They used to be sent again as if queued behind one another, for
// slowCallOpTimeouts×OpTimeout each.
func TestConcurrentCallsToABlackholedRedisFailAfterTheirAttempts(t *testing.T) {
	const calls, opTimeout = 4, 50 * time.Millisecond
	client := blackholedClient(calls)
	var attempts atomic.Int64
	client.AddHook(&countHook{n: &attempts})
	store, err := newStore(client, Options{OpTimeout: opTimeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	var wg sync.WaitGroup
	for range calls {
		wg.Go(func() {
			start := time.Now()
			_, err := store.Get(t.Context(), "k")
			if took := time.Since(start); !isTimeout(err) || took > slowCallOpTimeouts*opTimeout/2 {
				t.Errorf("Get = %v after %v; want a timeout after about %v", err, took, (slowOpTimeouts+opAttempts-1)*opTimeout)
			}
		})
	}
	wg.Wait()
	if n := attempts.Load(); n > 2*calls*opAttempts {
		t.Errorf("%d attempts for %d calls, want about %d", n, calls, calls*opAttempts)
	}
}

// With Redis blackholed, keys asked for at once, none cached, get their
// tokens from the endpoint: the store's calls fail fast enough for the
// fetch to fit in WaitTimeout (they used to fail after it).
func TestColdKeysGetTheirTokensWhileRedisIsBlackholed(t *testing.T) {
	store, err := newStore(blackholedClient(0), Options{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := tokencache.New(tokencache.Options{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	var wg sync.WaitGroup
	for i := range 2 {
		h, err := c.Register(tokencache.Application{Name: fmt.Sprint("app-", i), CacheKey: fmt.Sprint("identity-", i),
			Scopes: []string{"https://graph.microsoft.com/.default"},
			Fetch: func(context.Context) (tokencache.Fetched, error) {
				return tokencache.Fetched{AccessToken: "opaque-token", ExpiresAt: time.Now().Add(time.Hour)}, nil
			}})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			if _, err := h.Token(t.Context()); err != nil {
				t.Errorf("app-%d: %v", i, err)
			}
		})
	}
	wg.Wait()
}

// A Redis that accepts connections and then answers nothing, met while
// other calls of this store wait, is not taken for a blackholed one: its
// dials succeed (over TLS, their TCP connections are made, and only the
// handshake waits), so a timeout waited for an answer, maybe behind this
// process's own calls, and the call keeps trying for
// slowCallOpTimeouts×OpTimeout (see TestAnOutageFoundUnderLoadFailsLaterCallsFast),
// even though each timeout closes the connection it was sent on.
func TestAHungRedisThatAcceptsConnectionsIsNotTakenForBlackholed(t *testing.T) {
	const opTimeout = 10 * time.Millisecond
	for _, useTLS := range []bool{false, true} {
		t.Run(fmt.Sprint("tls=", useTLS), func(t *testing.T) {
			listener, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = listener.Close() })
			go func() {
				for {
					conn, err := listener.Accept()
					if err != nil {
						return
					}
					t.Cleanup(func() { _ = conn.Close() }) // read nothing, answer nothing
				}
			}()
			store, err := New(Options{Addrs: []string{listener.Addr().String()}, TLS: useTLS, OpTimeout: opTimeout})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = store.Close() })
			store.slots <- struct{}{} // a call of ours that Redis never answers
			defer func() { <-store.slots }()
			start := time.Now()
			if _, err := store.Get(t.Context(), "k"); !isTimeout(err) {
				t.Fatalf("Get from a hung Redis: %v, want a timeout", err)
			}
			if took := time.Since(start); took < slowCallOpTimeouts*opTimeout {
				t.Errorf("Get failed after %v, want about %v: its timeouts were taken for a blackholed Redis's", took, slowCallOpTimeouts*opTimeout)
			}
		})
	}
}
