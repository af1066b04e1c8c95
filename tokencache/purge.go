package tokencache

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"maps"
	"time"

	"go.uber.org/zap"
)

// PurgeRejected drops the handle's current token when it equals accessToken
// (the one just sent), for a downstream that answered 401 (the handler's
// path; the admin API's DELETE uses DeleteEverywhere, which drops whatever
// token the key holds, fleet-wide, and is not rate-limited): from L1 in this
// process and from the store (only if the store still holds that token), so
// the next Token fetches a fresh one, and a store record holding it is no
// longer taken. Each token is purged at most once (its SHA-256 fingerprint,
// never the token, is kept until it expires), and a record key at most once
// per PurgeInterval, an interval shared with drops the store asks for (see
// allowRefetch). It reports whether it purged.
func (h *Handle) PurgeRejected(ctx context.Context, accessToken string) bool {
	c := h.c
	if accessToken == "" {
		return false
	}
	rec := h.l1.Load()
	if rec == nil || subtle.ConstantTimeCompare([]byte(rec.AccessToken), []byte(accessToken)) != 1 {
		return false
	}
	ks := h.ks
	fingerprint := sha256.Sum256([]byte(accessToken))
	now := c.now()

	ks.mu.Lock()
	maps.DeleteFunc(ks.purged, func(_ [32]byte, expires time.Time) bool { return !now.Before(expires) })
	if _, done := ks.purged[fingerprint]; done || !c.allowRefetch(ks, now) {
		ks.mu.Unlock()
		return false
	}
	ks.rememberPurged(rec)
	ks.mu.Unlock()

	c.registerMu.Lock()
	ks.mu.Lock()
	if ks.current != nil && ks.current.AccessToken == accessToken {
		ks.clearCurrent()
	}
	ks.mu.Unlock()
	for _, other := range append([]*Handle{h}, ks.handles...) { // h too, if released
		if l1 := other.l1.Load(); l1 != nil && l1.AccessToken == accessToken {
			other.l1.CompareAndSwap(l1, nil)
		}
	}
	c.registerMu.Unlock()

	deleted, err := c.store.DeleteRecord(ctx, ks.key, accessToken)
	if err != nil {
		c.storeFailed(err)
	}
	c.log().Info("purged a rejected access token",
		zap.String("application", h.app.Name), zap.String("record_key", ks.key), zap.Bool("deleted_from_store", deleted))
	return true
}

// rememberPurged keeps rec's token from being taken again here until it
// expires: its SHA-256 fingerprint. The caller holds ks.mu.
func (ks *keyState) rememberPurged(rec *Record) {
	if ks.purged == nil {
		ks.purged = make(map[[32]byte]time.Time)
	}
	ks.purged[sha256.Sum256([]byte(rec.AccessToken))] = rec.AccessTokenExpiresAt
}

// isPurged reports whether token was purged from ks.
func (c *Cache) isPurged(ks *keyState, token string) bool {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if len(ks.purged) == 0 {
		return false
	}
	_, purged := ks.purged[sha256.Sum256([]byte(token))]
	return purged
}
