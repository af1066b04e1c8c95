package tokencache

import (
	"crypto/sha256"
	"errors"

	"go.uber.org/zap"
)

// verify runs h's VerifyStored on rec: ok for a record of h's identity, or
// an unverifiable one from a store that authenticates records.
func (c *Cache) verify(h *Handle, rec *Record) (ok bool, err error) {
	if h.app.VerifyStored == nil {
		return true, nil
	}
	err = h.app.VerifyStored(*rec)
	return err == nil || errors.Is(err, ErrUnverifiable) && c.store.Authenticates(), err
}

// trusted reports whether rec, read from the store, may be used by h: it
// passes the token checks and verify; a failure is logged once per token.
func (c *Cache) trusted(h *Handle, rec *Record) bool {
	if rec == nil || rec.AccessToken == "" {
		return true
	}
	if !c.acceptable(h, rec) {
		return false
	}
	ok, err := c.verify(h, rec)
	if ok {
		return true
	}
	if h.ks.firstRejection(rec.AccessToken) {
		fields := []zap.Field{zap.String("application", h.app.Name), zap.String("record_key", h.ks.key), zap.Error(err)}
		if errors.Is(err, ErrUnverifiable) {
			c.log().Info("ignoring a token record that cannot be verified against its identity; the token store does not authenticate records (see encryption_key)", fields...)
		} else {
			c.log().Warn("token record does not match its identity; possible tampering", fields...)
		}
	}
	return false
}

// shareable reports whether rec, a token h just fetched, may go through the
// store: whether other replicas will trust it. If not, the key is marked
// unshared (said once) and fetched from then on without the store.
func (c *Cache) shareable(h *Handle, rec *Record) bool {
	ks := h.ks
	if h.app.VerifyStored != nil && ks.unshared.Load() {
		return false
	}
	ok, err := c.verify(h, rec)
	if ok {
		return true
	}
	if ks.unshared.CompareAndSwap(false, true) {
		msg := "this replica's own token does not match its configured identity; fetching tokens for it without sharing them through the token store"
		if errors.Is(err, ErrUnverifiable) {
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
