package tokencache

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"maps"
	"slices"
	"strconv"
	"time"

	"go.uber.org/zap"
)

// PurgeRejected drops the handle's current token if it is accessToken (a
// downstream answered 401 to it), from L1 and the store (if it still holds
// it; a purge mark naming it lets other replicas drop it too), so that the
// next Token fetches a fresh one. Each token is purged at most once (its
// SHA-256 fingerprint is kept until it expires), a key at most once per
// PurgeInterval (see allowRefetch). It reports whether it purged.
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
	var current *Record
	if ks.current != nil && ks.current.AccessToken == accessToken {
		current = ks.current
		ks.clearCurrent()
	}
	ks.mu.Unlock()
	if l1 := h.l1.Load(); l1 != nil && l1.AccessToken == accessToken {
		h.l1.Store(nil) // h, if released
	}
	c.registerMu.Unlock()

	// The purge reaches the store even if the rejected request's client
	// has gone; each store call is bounded by its own timeout.
	ctx = context.WithoutCancel(ctx)
	// The mark names every record of the token this replica knows: other
	// replicas may hold the same token in another record (written again).
	var stored *Record
	if got, err := c.store.Get(ctx, ks.key); err == nil && subtle.ConstantTimeCompare([]byte(got.AccessToken), []byte(accessToken)) == 1 {
		stored = got
	}
	_ = c.markPurged(ctx, ks, rec, current, stored) // a failure is counted as the store's
	deleted, err := c.store.DeleteRecord(ctx, ks.key, accessToken)
	if err != nil {
		c.storeFailed(err)
	}
	c.log().Info("purged a rejected access token",
		zap.String("application", h.app.Name), zap.String("record_key", ks.key), zap.Bool("deleted_from_store", deleted))
	return true
}

// maxPurgeMarkTTL bounds how long a purge mark is kept.
const maxPurgeMarkTTL = 24 * time.Hour

// markPurged writes ks's purge mark naming recs (nil ones skipped) until
// the last of them expires, at most maxPurgeMarkTTL; the caller deletes and
// announces after it. Other replicas drop a valid token for the store only
// on a mark naming its record (see dropGone), so that a Redis writer
// without the key cannot make them. With nothing to name it writes nothing.
func (c *Cache) markPurged(ctx context.Context, ks *keyState, recs ...*Record) error {
	var purged [][32]byte
	var expires time.Time
	for _, rec := range recs {
		if rec == nil || rec.AccessToken == "" {
			continue
		}
		if print := markPrint(rec); !slices.Contains(purged, print) {
			purged = append(purged, print)
		}
		if rec.AccessTokenExpiresAt.After(expires) {
			expires = rec.AccessTokenExpiresAt
		}
	}
	ttl := min(expires.Sub(c.now()), maxPurgeMarkTTL)
	if len(purged) == 0 || ttl <= 0 {
		return nil
	}
	err := c.store.SetPurgeMark(ctx, PurgeMarkKey(ks.key), purged, ttl)
	if err != nil {
		c.storeFailed(err)
	}
	return err
}

// purgeMarked reports whether ks's purge mark names rec. A mark that does
// not open (written without the store's key) or a store failure names
// nothing.
func (c *Cache) purgeMarked(ctx context.Context, ks *keyState, rec *Record) bool {
	purged, err := c.store.GetPurgeMark(ctx, PurgeMarkKey(ks.key))
	if err != nil {
		if !errors.Is(err, ErrNotFound) {
			c.storeFailed(err)
		}
		return false
	}
	return slices.Contains(purged, markPrint(rec))
}

// markPrint names rec in a purge mark: the SHA-256 of its token and of when
// it was written, so that the same token written again later (a managed
// identity's endpoint hands out the token it cached) is not named.
func markPrint(rec *Record) [32]byte {
	sum := sha256.New()
	sum.Write([]byte(rec.AccessToken))
	sum.Write([]byte{0})
	sum.Write(strconv.AppendInt(nil, rec.UpdatedAt.UnixNano(), 10))
	return [32]byte(sum.Sum(nil))
}

// rememberPurged keeps rec's token from being taken again here until it
// expires. The caller holds ks.mu.
func (ks *keyState) rememberPurged(rec *Record) {
	ks.refuse(sha256.Sum256([]byte(rec.AccessToken)), rec)
}

// rememberDropped keeps rec, dropped on a purge mark, from being taken
// again here until it expires; its token written again in a newer record
// is taken. The caller holds ks.mu.
func (ks *keyState) rememberDropped(rec *Record) { ks.refuse(markPrint(rec), rec) }

// refuse keeps what fingerprint names from being taken until rec expires.
// The caller holds ks.mu.
func (ks *keyState) refuse(fingerprint [32]byte, rec *Record) {
	if ks.purged == nil {
		ks.purged = make(map[[32]byte]time.Time)
	}
	ks.purged[fingerprint] = rec.AccessTokenExpiresAt
}

// isPurged reports whether rec's token was purged from ks, or rec dropped.
func (c *Cache) isPurged(ks *keyState, rec *Record) bool {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if len(ks.purged) == 0 {
		return false
	}
	_, purged := ks.purged[sha256.Sum256([]byte(rec.AccessToken))]
	_, dropped := ks.purged[markPrint(rec)]
	return purged || dropped
}
