package tokencache

import (
	"crypto/sha256"
	"errors"

	"go.uber.org/zap"
)

// trusted reports whether rec, read from the store, may be used by h (see
// Application.VerifyStored): a record that matches h's identity; one that
// cannot be checked only from a store that authenticates its records; never
// one of another identity, which is logged as possible tampering.
func (c *Cache) trusted(h *Handle, rec *Record) bool {
	if rec == nil || rec.AccessToken == "" {
		return true
	}
	if !c.acceptable(h, rec) {
		return false
	}
	verify := h.app.VerifyStored
	if verify == nil {
		return true
	}
	err := verify(*rec)
	unverifiable := errors.Is(err, ErrUnverifiable)
	if err == nil || unverifiable && c.store.Authenticates() {
		return true
	}
	if h.ks.firstRejection(rec.AccessToken) {
		fields := []zap.Field{zap.String("application", h.app.Name), zap.String("record_key", h.ks.key), zap.Error(err)}
		if unverifiable {
			c.log().Info("ignoring a token record that cannot be verified against its identity; the token store does not authenticate records (see encryption_key)", fields...)
		} else {
			c.log().Warn("token record does not match its identity; possible tampering", fields...)
		}
	}
	return false
}

// shareable reports whether rec, a token h itself just fetched, may go
// through the store: when other replicas with h's identity will be able to
// trust it. A token that cannot be verified, on a store that does not
// authenticate records, or one that does not match h's own identity (a
// misconfiguration: every replica would reject it) is not; then the key is
// marked unshared, said once, and from then on fetched by this replica on
// its own, without the store.
func (c *Cache) shareable(h *Handle, rec *Record) bool {
	verify := h.app.VerifyStored
	ks := h.ks
	if verify == nil {
		return true
	}
	if ks.unshared.Load() {
		return false
	}
	err := verify(*rec)
	unverifiable := errors.Is(err, ErrUnverifiable)
	if err == nil || unverifiable && c.store.Authenticates() {
		return true
	}
	if ks.unshared.CompareAndSwap(false, true) {
		msg := "this replica's own token does not match its configured identity; fetching tokens for it without sharing them through the token store"
		if unverifiable {
			msg = "other replicas could not verify this replica's tokens, and the token store does not authenticate records; " +
				"fetching tokens for it without sharing them through the token store (set encryption_key to share them)"
		}
		c.log().Warn(msg,
			zap.String("application", h.app.Name), zap.String("record_key", ks.key), zap.Error(err))
	}
	return false
}

// firstRejection records that token, read from the store, was not trusted,
// and reports whether it is a new one (to be logged).
func (ks *keyState) firstRejection(token string) bool {
	fingerprint := sha256.Sum256([]byte(token))
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.rejected == fingerprint {
		return false
	}
	ks.rejected = fingerprint
	return true
}
