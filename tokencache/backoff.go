package tokencache

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Backoff after failed fetches: transient failures wait 1s doubling to 60s,
// permanent ones 5s doubling to 5min, each plus a random 0–50% (within the
// cap) and never shorter than a Retry-After (up to maxRetryAfter, the
// longest backoff a replica writes). maxClockSkew is how far apart replicas'
// clocks may be.
const (
	transientBackoffMin = time.Second
	transientBackoffMax = 60 * time.Second
	permanentBackoffMin = 5 * time.Second
	permanentBackoffMax = 5 * time.Minute
	maxRetryAfter       = 10 * time.Minute
	maxClockSkew        = time.Minute
	maxBackoffMessage   = 1024
	// maxSharedAttempts bounds a backoff's count read from the store: more
	// failures than a replica makes in a year at the longest pause.
	maxSharedAttempts = 1 << 20
)

// classify reads what a fetch error says about retrying, through FetchError.
func classify(err error) (result FetchResult, retryAfter time.Duration) {
	var fe FetchError
	switch {
	case err == nil:
		return FetchSucceeded, 0
	case !errors.As(err, &fe):
		return FetchTransient, 0
	case fe.PermanentFailure():
		return FetchPermanent, max(fe.RetryAfterHint(), 0)
	case fe.RetryAfterHint() > 0:
		return FetchThrottled, fe.RetryAfterHint()
	}
	return FetchTransient, 0
}

// report tells h's OnFetch how a Fetch call ended (err: its error or the
// cache's refusal of its token).
func (h *Handle) report(err error, took time.Duration) {
	if h.app.OnFetch == nil {
		return
	}
	result, _ := classify(err)
	h.app.OnFetch(FetchOutcome{Result: result, Duration: took, Err: err})
}

// backoffDelay is the wait after the attempt-th consecutive failure, with
// random in [0, 1) choosing the jitter.
func backoffDelay(attempt int, permanent bool, retryAfter time.Duration, random float64) time.Duration {
	lo, hi := transientBackoffMin, transientBackoffMax
	if permanent {
		lo, hi = permanentBackoffMin, permanentBackoffMax
	}
	base, attempt := hi, max(attempt, 1)
	if attempt <= 20 { // beyond, the shift would reach the cap anyway
		base = min(lo<<(attempt-1), hi)
	}
	d := min(base+time.Duration(random*float64(base)/2), hi)
	if retryAfter > d {
		d = min(retryAfter, maxRetryAfter)
	}
	return d
}

// isLocalFailure reports whether err is this replica's alone, which the
// fleet must not obey: no answer from the endpoint, a token this cache
// refused, or a panicking Fetch.
func isLocalFailure(err error) bool {
	if errors.Is(err, errEmptyToken) || errors.Is(err, errTokenTooShort) || errors.Is(err, errFetchPanicked) {
		return true
	}
	var fe FetchError
	return errors.As(err, &fe) && fe.HTTPStatus() == 0
}

// appliesTo reports whether b binds credentialID: a transient backoff binds
// everyone, a permanent one only the same credential (a rotated, good
// credential is not paused by the old one's failure).
func (b *Backoff) appliesTo(credentialID string) bool {
	return !b.Permanent || b.CredentialID == credentialID
}

// activeBackoff returns ks's backoff if it runs at now and binds credentialID.
func (ks *keyState) activeBackoff(now time.Time, credentialID string) (Backoff, error, bool) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if !now.Before(ks.failure.Until) || !ks.failure.appliesTo(credentialID) {
		return Backoff{}, nil, false
	}
	return ks.failure, ks.lastErr, true
}

// adoptBackoff takes a backoff read from the store into ks, counting
// attempts from the fleet's, unless it binds another credential.
func (ks *keyState) adoptBackoff(b *Backoff, credentialID string) {
	if !b.appliesTo(credentialID) {
		return
	}
	ks.mu.Lock()
	defer ks.mu.Unlock()
	mine := ks.failure.appliesTo(credentialID)
	if !mine || b.Until.After(ks.failure.Until) {
		lastErr := ks.lastErr
		if !mine || b.Attempts > ks.failure.Attempts {
			lastErr = nil // another replica's (or credential's) failure
		}
		ks.failure, ks.lastErr = *b, lastErr
	} else if b.Attempts > ks.failure.Attempts {
		ks.failure.Attempts = b.Attempts
	}
}

// clearBackoff forgets ks's failures, reporting whether there were any.
func (ks *keyState) clearBackoff() bool {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	had := ks.failure.Attempts > 0
	ks.failure, ks.lastErr = Backoff{}, nil
	return had
}

// backedOff returns the error for a caller of h while b runs; cause is the
// failure's error when this process saw it.
func (c *Cache) backedOff(h *Handle, b Backoff, cause error) *Error {
	msg := cmp.Or(b.Message, fmt.Sprintf("requesting a token for application %q failed", h.app.Name))
	return pausedBy(b, cause, msg+"; token requests", c.now())
}

// pausedBy returns the error of a call made at now while b runs, saying
// what is paused ("<failure>; token requests") and for how long.
func pausedBy(b Backoff, cause error, what string, now time.Time) *Error {
	wait := b.Until.Sub(now)
	return requestError(cause, "%s paused for %s", what, ceilSecond(wait)).paused(b.Permanent, wait)
}

// refused is backedOff, except that for a forced refresh the cause is
// ErrPaused (wrapping the failure) and RetryAfter runs until b ends, even
// when b is permanent.
func (c *Cache) refused(h *Handle, b Backoff, cause error, forced bool) error {
	e := c.backedOff(h, b, cause)
	if forced {
		e.Err = &pausedError{cause: e.Err}
		e.RetryAfter = max(b.Until.Sub(c.now()), time.Millisecond)
	}
	return e
}

// ceilSecond rounds d up to a whole second: never "paused for 0s".
func ceilSecond(d time.Duration) time.Duration {
	return (d + time.Second - 1).Truncate(time.Second)
}

// checkStoreBackoff reads and adopts the fleet's backoff for h's key and
// returns it if it runs and binds h's credential.
func (c *Cache) checkStoreBackoff(ctx context.Context, h *Handle) (Backoff, error, bool) {
	credentialID := h.app.credentialID()
	if b := c.readSharedBackoff(ctx, h.ks.backoffKey, h.app.Name); b != nil {
		h.ks.adoptBackoff(b, credentialID)
	}
	return h.ks.activeBackoff(c.now(), credentialID)
}

// readSharedBackoff returns the fleet's backoff under key, bounded by what
// a replica writes, or nil: none, the store failed, or it is larger or runs
// longer than any replica writes (possible tampering, warned of for
// application name once an hour at most until a backoff there reads
// within bounds).
func (c *Cache) readSharedBackoff(ctx context.Context, key, name string) *Backoff {
	b, err := c.store.GetBackoff(ctx, key)
	switch {
	case errors.Is(err, ErrTooLarge):
		c.warnTamperedBackoff(key, "ignoring a shared backoff larger than any replica writes (possible tampering)",
			zap.String("application", name), zap.Error(err))
		return nil
	case errors.Is(err, ErrNotFound):
		return nil
	case err != nil:
		c.storeFailed(err)
		return nil
	}
	b.Message = truncate(b.Message, maxBackoffMessage) // no more than a replica writes
	b.Attempts = min(max(b.Attempts, 0), maxSharedAttempts)
	// Longer than any replica writes: a Redis writer must not pause us.
	if b.Until.After(c.now().Add(maxRetryAfter + maxClockSkew)) {
		c.warnTamperedBackoff(key, "ignoring a shared backoff that runs longer than any replica writes (possible tampering)",
			zap.String("application", name), zap.Time("until", b.Until), zap.Duration("longest", maxRetryAfter))
		return nil
	}
	c.tamperedBackoffs.Delete(key)
	return b
}

// tamperWarningInterval is how often a tampered backoff under one key is
// warned of at most; repeats within it are logged at debug.
const tamperWarningInterval = time.Hour

// warnTamperedBackoff warns of the backoff under key, at debug if it was
// warned of within tamperWarningInterval and no backoff there read within
// bounds since (an empty key clears nothing: a value that does not open
// reads as none, so a writer alternating values could set the rate).
func (c *Cache) warnTamperedBackoff(key, msg string, fields ...zap.Field) {
	now := c.now()
	if at, warned := c.tamperedBackoffs.Load(key); warned && now.Sub(at.(time.Time)) < tamperWarningInterval {
		c.log().Debug(msg, fields...)
		return
	}
	c.tamperedBackoffs.Store(key, now)
	c.log().Warn(msg, fields...)
}

// recordFailure starts or lengthens the backoff after a failed fetch made
// with credentialID, in the store too if shared and not a local failure,
// and returns the error for the fetch's callers.
func (c *Cache) recordFailure(ctx context.Context, h *Handle, fetchErr error, credentialID string, shared bool) *Error {
	ks := h.ks
	result, retryAfter := classify(fetchErr)
	permanent := result == FetchPermanent
	callerErr := requestFailed(h, fetchErr)
	shared = shared && !isLocalFailure(fetchErr)

	ks.mu.Lock()
	attempts := 1
	if ks.failure.appliesTo(credentialID) {
		attempts = ks.failure.Attempts + 1
	}
	delay := backoffDelay(attempts, permanent, retryAfter, c.random())
	b := Backoff{Until: c.now().Add(delay).UTC(), Permanent: permanent, Attempts: attempts,
		Message: truncate(callerErr.Message, maxBackoffMessage), CredentialID: credentialID}
	ks.failure, ks.lastErr = b, fetchErr
	ks.mu.Unlock()

	c.log().Warn("token request failed; backing off",
		zap.String("application", h.app.Name), zap.String("result", string(result)), zap.Int("attempts", attempts),
		zap.Duration("retry_in", delay), zap.Bool("shared", shared && !c.inMemory), zap.String("error", callerErr.Message))
	if shared {
		if err := c.store.SetBackoff(ctx, ks.backoffKey, &b, delay); err != nil {
			c.storeFailed(err)
		}
	}
	if permanent || result == FetchThrottled {
		own := *callerErr // the fetch's own *Error is not ours to change
		callerErr = own.paused(permanent, delay)
	}
	return callerErr
}

// triedFailed returns the error for the callers of a TryRefresh whose
// fetch was refused (a permanent failure), recording no backoff: the
// refusal is theirs alone.
func (c *Cache) triedFailed(h *Handle, fetchErr error) *Error {
	callerErr := requestFailed(h, fetchErr)
	c.log().Warn("tried token request refused; not backing off",
		zap.String("application", h.app.Name), zap.String("error", callerErr.Message))
	return callerErr
}

// isPermanent reports whether err is a permanent failure (see classify).
func isPermanent(err error) bool {
	result, _ := classify(err)
	return result == FetchPermanent
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}
