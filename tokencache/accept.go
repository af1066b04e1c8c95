package tokencache

import (
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/internal/jws"
)

// Checks of the token in a record, whatever the store's mode (sealed with
// an encryption key or plaintext): they bound what a writer of the store
// (or a replica holding the key) can make a replica inject, without
// verifying signatures, which third parties cannot do for Entra's tokens.
//
// A record read from the store is a miss, logged as possible tampering,
// when its token:
//   - is a compact JWS whose header is unreadable, names no alg or alg
//     "none", or whose payload is unreadable or has no exp claim; or a JWE;
//   - is recorded with an expiry more than maxExpiryDrift away from its exp;
//   - lives longer than maxStoredLifetime: its expiry is more than that
//     after now, after the record's UpdatedAt, or (its exp) after its iat;
//   - was updated more than maxFutureUpdate after now.
//
// A token that is not a JWS at all (an opaque token of a non-Entra server)
// has no header to read: its lifetime is bounded as above, and
// Application.VerifyStored decides the rest (the sidecar's refuses it unless
// the store authenticates records).
//
// As the refresh point of a record is a fraction of its lifetime, a
// store-read record that passes is refreshed within maxStoredLifetime.
//
// A replica's own token is recorded with its JWT exp; one that is a JWS
// failing the checks above is used by this replica only, never written to
// the store (other replicas would refuse it).

const (
	// maxExpiryDrift is how far a record's expiry may be from its token's
	// exp: own records carry the exp itself, truncated to milliseconds.
	maxExpiryDrift = time.Second
	// storedLifetimeFactor times the longest lifetime of this replica's own
	// tokens for a key is the longest a store-read token of that key may
	// live (Entra's tokens vary between 60 and 90 minutes: 1.5 covers the
	// spread).
	storedLifetimeFactor = 1.5
	// assumedOwnLifetime is the longest a store-read token may live before
	// this replica has had a token of its own for the key: a managed
	// identity's tokens live 24 hours, the longest Entra issues for apps.
	assumedOwnLifetime = 24 * time.Hour
	// maxFutureUpdate tolerates clocks of replicas that run ahead.
	maxFutureUpdate = time.Minute
)

// maxStoredLifetime is the longest a store-read token of ks may live:
// storedLifetimeFactor times the longest of this replica's own tokens for
// ks, and assumedOwnLifetime (24 hours) before it has had one.
func maxStoredLifetime(ks *keyState) time.Duration {
	own := time.Duration(ks.longestOwn.Load())
	if own <= 0 {
		return assumedOwnLifetime
	}
	return time.Duration(storedLifetimeFactor * float64(own))
}

// storedTokenProblem returns why rec, read from the store for ks, must not
// be used, or nil. The error names fields and times, never the token.
func storedTokenProblem(ks *keyState, rec *Record, now time.Time) error {
	return tokenProblemWithin(maxStoredLifetime(ks), rec, now)
}

// tokenProblemWithin returns why rec, read from the store, must not be
// used when its tokens may live at most bound, or nil.
func tokenProblemWithin(bound time.Duration, rec *Record, now time.Time) error {
	expiry := rec.AccessTokenExpiresAt
	if left := expiry.Sub(now); left > bound {
		return fmt.Errorf("the record's token expires in %s, longer than the tokens of the key may live (%s)",
			left.Round(time.Second), bound)
	}
	if !rec.UpdatedAt.IsZero() {
		if ahead := rec.UpdatedAt.Sub(now); ahead > maxFutureUpdate {
			return fmt.Errorf("the record was updated %s in the future", ahead.Round(time.Second))
		}
		if life := expiry.Sub(rec.UpdatedAt); life > bound {
			return fmt.Errorf("the record's token lives %s from its update, longer than %s", life.Round(time.Second), bound)
		}
	}
	tok, err := jws.Parse(rec.AccessToken)
	if errors.Is(err, jws.ErrNotJWS) {
		return nil
	}
	if err != nil {
		return err
	}
	exp, ok := tok.Time("exp")
	if !ok {
		return errors.New("the token has no exp claim")
	}
	if drift := expiry.Sub(exp).Abs(); drift > maxExpiryDrift {
		return fmt.Errorf("the record's expiry %s differs from the token's exp %s",
			expiry.UTC().Format(time.RFC3339), exp.UTC().Format(time.RFC3339))
	}
	if iat, ok := tok.Time("iat"); ok && exp.Sub(iat) > bound {
		return fmt.Errorf("the token lives %s from its iat, longer than %s", exp.Sub(iat).Round(time.Second), bound)
	}
	return nil
}

// acceptable reports whether rec, read from the store for h, passes the
// token checks; a record that does not is logged (once per token) as
// possible tampering.
func (c *Cache) acceptable(h *Handle, rec *Record) bool {
	err := storedTokenProblem(h.ks, rec, c.now())
	if err == nil {
		return true
	}
	if h.ks.firstRejection(rec.AccessToken) {
		c.log().Warn("ignoring a token record that fails the token checks; possible tampering",
			zap.String("application", h.app.Name), zap.String("record_key", h.ks.key), zap.Error(err))
	}
	return false
}

// ownToken records rec, a token h itself just fetched, with its JWT's exp
// (when it reads as a signed JWS with one, and that leaves it usable),
// keeps its lifetime as the key's longest own one, and reports whether it
// may go through the store: not when it is a JWS that other replicas would
// refuse (unsigned, unreadable, without exp, a JWE), which is said once.
func (c *Cache) ownToken(h *Handle, rec *Record, now time.Time) bool {
	ks := h.ks
	tok, err := jws.Parse(rec.AccessToken)
	if err == nil {
		exp, ok := tok.Time("exp")
		switch {
		case !ok:
			err = errors.New("the token has no exp claim")
		case exp.Sub(now) <= c.refreshWindow:
			err = errors.New("the token's exp leaves less than the refresh window")
		default:
			rec.AccessTokenExpiresAt = exp.UTC()
		}
	}
	life := int64(rec.AccessTokenExpiresAt.Sub(now))
	for longest := ks.longestOwn.Load(); life > longest && !ks.longestOwn.CompareAndSwap(longest, life); {
		longest = ks.longestOwn.Load()
	}
	if err == nil || errors.Is(err, jws.ErrNotJWS) {
		return true
	}
	if ks.ownRefused.CompareAndSwap(false, true) {
		c.log().Warn("this replica's own token would fail the checks other replicas make of the token store's records; "+
			"using it in this replica only, without sharing it",
			zap.String("application", h.app.Name), zap.String("record_key", ks.key), zap.Error(err))
	}
	return false
}
