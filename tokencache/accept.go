package tokencache

import (
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/internal/jws"
)

// Checks of a store-read record's token, sealed or not: they bound what a
// writer of the store can make a replica inject, without verifying
// signatures (third parties cannot, for Entra's tokens). The record is a
// miss, logged as possible tampering, when its token is a JWS with an
// unreadable header or payload, no alg or alg "none", or no exp, or a JWE;
// has an expiry more than maxExpiryDrift from its exp; lives longer than
// maxStoredLifetime (from now, from UpdatedAt, or exp from iat); or was
// updated more than maxFutureUpdate ahead. An opaque token (not a JWS) is
// bounded by lifetime only; VerifyStored decides the rest. A replica's own
// token that fails these checks is never written to the store.

const (
	maxExpiryDrift = time.Second // own records carry the exp, in milliseconds
	// storedLifetimeFactor times this replica's longest own token lifetime
	// bounds a store-read token's (Entra's vary from 60 to 90 minutes).
	storedLifetimeFactor = 1.5
	// assumedOwnLifetime is the bound before this replica has had a token of
	// its own: a managed identity's tokens live 24 hours, Entra's longest.
	assumedOwnLifetime = 24 * time.Hour
	maxFutureUpdate    = time.Minute // clocks of replicas that run ahead
)

// maxStoredLifetime is the longest a store-read token of ks may live.
func maxStoredLifetime(ks *keyState) time.Duration {
	own := time.Duration(ks.longestOwn.Load())
	if own <= 0 {
		return assumedOwnLifetime
	}
	return time.Duration(storedLifetimeFactor * float64(own))
}

// tokenProblemWithin returns why rec, read from the store, must not be
// used when its tokens may live at most bound, or nil. The error names
// fields and times, never the token.
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
// token checks; a failure is logged once per token.
func (c *Cache) acceptable(h *Handle, rec *Record) bool {
	err := tokenProblemWithin(maxStoredLifetime(h.ks), rec, c.now())
	if err == nil {
		return true
	}
	if h.ks.firstRejection(rec.AccessToken) {
		c.log().Warn("ignoring a token record that fails the token checks; possible tampering",
			zap.String("application", h.app.Name), zap.String("record_key", h.ks.key), zap.Error(err))
	}
	return false
}

// ownToken records rec, a token h just fetched, with its JWT's exp (when
// that leaves it usable), keeps its lifetime as the key's longest own one,
// and reports whether it may go through the store: not a JWS that other
// replicas would refuse (said once).
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
