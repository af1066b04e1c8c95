package tokencache

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// ErrPaused is the cause (errors.Is) of Refresh's error when the key is
// backed off after a failure: no token request was made.
var ErrPaused = errors.New("tokencache: token requests are paused after a failure")

// forcedRefreshInterval: Refresh calls this close together share one
// token request.
const forcedRefreshInterval = time.Second

// forcedRefresh is the last forced refresh of a key: when it began, and
// its result once it ended.
type forcedRefresh struct {
	started time.Time
	done    bool
	rec     *Record
	err     error
}

// pausedError is Refresh's cause while the key is backed off: it is
// ErrPaused and unwraps to the failure that started the backoff.
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
// is valid, and shares it: the record is written to the store and
// announced, so every replica sharing the store replaces its copy (see
// watch). Use it when the token's content must change (an app role was
// granted). It takes the refresh lock like any refresh; when another
// replica holds it, a token that replica writes meanwhile will do.
//
// It is bounded: while the key is backed off after a failure it makes no
// token request and returns an *Error (RetryAfter until the backoff ends,
// Permanent too if it is) whose cause is ErrPaused; calls within a second
// of a forced refresh's start share its result. Errors are *Error, as
// Token's.
func (h *Handle) Refresh(ctx context.Context) (Record, error) {
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
			return last.rec, last.err // a call that came as the last one ended
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
	select {
	case <-ctx.Done():
		return Record{}, requestError(ctx.Err(), "waiting for a token for application %q: %v", h.app.Name, ctx.Err())
	case res := <-results:
		rec, _ := res.Val.(*Record)
		return h.forcedResult(rec, res.Err)
	}
}

// forcedResult is what Refresh returns for a forced refresh's outcome.
func (h *Handle) forcedResult(rec *Record, err error) (Record, error) {
	if err != nil {
		return Record{}, requestFailed(h, err)
	}
	return *h.view(rec), nil
}

// DeleteEverywhere purges h's key everywhere, whatever token it holds: it
// serves the admin API (DELETE /entra/tokens/<application>). The store's
// record is deleted, this process drops its copy, and the deletion is
// announced so that every replica sharing the store drops its own (see
// watch). The next Token fetches a new token (one per fleet, as usual); a
// key kept warm (Prefetch) fetches at once. A running backoff is kept. It
// is not rate-limited (unlike PurgeRejected, which drops only a given
// token a downstream refused). The error reports a store failure; this
// process's copy is dropped regardless.
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
	for _, other := range append([]*Handle{h}, ks.handles...) { // h too, if released
		other.l1.Store(nil)
	}
	c.registerMu.Unlock()

	err := c.store.RemoveRecord(ctx, ks.key)
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
