package tokencache

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// ErrPaused is the cause of Refresh's error while the key is backed off.
var ErrPaused = errors.New("tokencache: token requests are paused after a failure")

// forcedRefreshInterval: Refresh calls this close together share one request.
const forcedRefreshInterval = time.Second

// forcedRefresh is a key's last forced refresh, and its result once done.
type forcedRefresh struct {
	started time.Time
	done    bool
	rec     *Record
	err     error
}

// pausedError is ErrPaused, unwrapping to the failure of the backoff.
type pausedError struct{ cause error }

func (e *pausedError) Error() string {
	if e.cause == nil {
		return ErrPaused.Error()
	}
	return ErrPaused.Error() + ": " + e.cause.Error()
}
func (e *pausedError) Is(target error) bool { return target == ErrPaused }
func (e *pausedError) Unwrap() error        { return e.cause }

// Refresh fetches a new token for h's key now, even while the current one
// is valid, and shares it with every replica (when the token's content must
// change: an app role was granted). A token another lock holder writes
// meanwhile will do. While the key is backed off it makes no request: the
// *Error's cause is ErrPaused, RetryAfter until the backoff ends. A failed
// fetch backs the key off, as Token's does. Calls within a second of one's
// start share its result, a TryRefresh's too. Errors are *Error.
func (h *Handle) Refresh(ctx context.Context) (Record, error) {
	return h.forceRefresh(ctx)
}

// triedKey marks the context of a TryRefresh's flight.
type triedKey struct{}

// TryRefresh is Refresh for a token asked with something of its caller's
// that the token endpoint may refuse (carried to Fetch by ctx: a
// downstream's claims challenge). Its permanent failure (the endpoint
// refusing what was asked) is its callers' alone: no backoff is recorded,
// in this process or the store, so Token, Refresh and background refreshes
// go on as before on every replica, and the current token is kept and
// still served; throttling and transient failures back off as Refresh's
// do. It obeys a running backoff as Refresh does, and shares Refresh's
// limit of one fetch per second per key: a Refresh within a second of a
// TryRefresh's start gets its result, a refusal too, and records no
// backoff for it (a Refresh a second later fetches again). A TryRefresh
// sharing a Refresh's failure gets that Refresh's error, whose backoff
// Refresh recorded. Its caller waits at most WaitTimeout (the refresh goes
// on without it). Errors are *Error.
func (h *Handle) TryRefresh(ctx context.Context) (Record, error) {
	return h.forceRefresh(context.WithValue(ctx, triedKey{}, true))
}

// tried reports whether ctx is a TryRefresh's.
func tried(ctx context.Context) bool { return ctx.Value(triedKey{}) != nil }

// forceRefresh is Refresh and TryRefresh: the flight that starts the
// key's forced refresh runs with its caller's ctx, tried or not.
func (h *Handle) forceRefresh(ctx context.Context) (Record, error) {
	c, ks := h.c, h.ks
	if c.isClosed() {
		return Record{}, closedError(h)
	}
	ks.mu.Lock()
	last := ks.forced
	ks.mu.Unlock()
	if last.done && c.now().Sub(last.started) < forcedRefreshInterval {
		return h.forcedResult(last.rec, last.err)
	}
	results := ks.flights.DoChan("forced", func() (any, error) {
		ks.mu.Lock()
		last := ks.forced
		if last.done && c.now().Sub(last.started) < forcedRefreshInterval {
			ks.mu.Unlock()
			return last.rec, last.err
		}
		started := c.now()
		ks.forced = forcedRefresh{started: started}
		ks.mu.Unlock()

		fetcher := c.newest(h)
		rec, err := c.runFlight(ctx, h, func(ctx context.Context) (*Record, error) {
			return c.load(ctx, fetcher, c.forcedAcceptor(ks), true)
		})
		ks.mu.Lock()
		ks.forced = forcedRefresh{started: started, done: true, rec: rec, err: err}
		ks.mu.Unlock()
		return rec, err
	})
	var timeout <-chan time.Time // a TryRefresh's caller waits WaitTimeout at most, as Token's
	if tried(ctx) {
		wait := time.NewTimer(c.waitTimeout)
		defer wait.Stop()
		timeout = wait.C
	}
	select {
	case <-ctx.Done():
		return Record{}, requestError(ctx.Err(), "waiting for a token for application %q: %v", h.app.Name, ctx.Err())
	case <-timeout:
		return Record{}, requestError(context.DeadlineExceeded,
			"no token for application %q within %s; still trying", h.app.Name, c.waitTimeout)
	case res := <-results:
		rec, _ := res.Val.(*Record)
		return h.forcedResult(rec, res.Err)
	}
}

func (h *Handle) forcedResult(rec *Record, err error) (Record, error) {
	if err != nil {
		return Record{}, requestFailed(h, err)
	}
	return *h.view(rec), nil
}

// DeleteEverywhere purges h's key, whatever token it holds, here, in the
// store and (announced, with a purge mark naming the record's token and
// this process's) in every replica: the admin API's DELETE. The next
// Token fetches (a key kept warm at once); a running backoff is kept. It is
// not rate-limited. The error reports a store failure; this process's copy
// is dropped regardless.
func (h *Handle) DeleteEverywhere(ctx context.Context) error {
	c, ks := h.c, h.ks
	c.registerMu.Lock()
	ks.mu.Lock()
	cur := ks.current
	ks.clearCurrent()
	if cur != nil && cur.AccessToken != "" {
		ks.rememberPurged(cur) // should a racing read bring it back
	}
	ks.mu.Unlock()
	h.l1.Store(nil) // h, if released
	c.registerMu.Unlock()

	// The token the store holds is named too. Without its mark the others
	// would keep the token: the record stays for a retry to name, and this
	// replica's next token replaces it.
	stored, err := c.store.Get(ctx, ks.key)
	if errors.Is(err, ErrNotFound) {
		err = nil // no record (or one that does not decode): nothing to name
	}
	if err == nil {
		err = c.markPurged(ctx, ks, cur, stored)
	}
	if err == nil {
		err = c.store.RemoveRecord(ctx, ks.key)
	}
	if err != nil {
		c.storeFailed(err)
	} else {
		c.storeRecovered()
		c.publish(ctx, ks, nil)
	}
	c.log().Info("purged the access token on request",
		zap.String("application", h.app.Name), zap.String("record_key", ks.key), zap.Bool("deleted_from_store", err == nil))
	if c.warm(ks) {
		c.backgroundRefresh(ks, nil)
	}
	if err != nil {
		return fmt.Errorf("tokencache: purging %s from the store: %w", ks.key, err)
	}
	return nil
}
