package tokencache

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"maps"
	"slices"
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

// markPurged writes ks's purge mark naming the tokens of recs (nil ones
// skipped), each with its newest write among them, until the last of them
// expires, at most maxPurgeMarkTTL; the caller deletes and announces after
// it. Other replicas drop a valid token for the store only on a mark naming
// its record (see dropGone), so that a Redis writer without the key cannot
// make them. With nothing to name it writes nothing.
func (c *Cache) markPurged(ctx context.Context, ks *keyState, recs ...*Record) error {
	var purged []PurgedToken
	var expires time.Time
	for _, rec := range recs {
		if rec == nil || rec.AccessToken == "" {
			continue
		}
		fingerprint := sha256.Sum256([]byte(rec.AccessToken))
		if i := slices.IndexFunc(purged, func(p PurgedToken) bool { return p.Fingerprint == fingerprint }); i < 0 {
			purged = append(purged, PurgedToken{Fingerprint: fingerprint, WrittenAt: rec.UpdatedAt})
		} else if rec.UpdatedAt.After(purged[i].WrittenAt) {
			purged[i].WrittenAt = rec.UpdatedAt
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

// purgeMarked reports whether ks's purge mark names rec: its token, written
// no later than the mark says. A mark that does not open (written without
// the store's key) or a store failure names nothing.
func (c *Cache) purgeMarked(ctx context.Context, ks *keyState, rec *Record) bool {
	purged, err := c.store.GetPurgeMark(ctx, PurgeMarkKey(ks.key))
	if err != nil {
		if !errors.Is(err, ErrNotFound) {
			c.storeFailed(err)
		}
		return false
	}
	fingerprint := sha256.Sum256([]byte(rec.AccessToken))
	return slices.ContainsFunc(purged, func(p PurgedToken) bool {
		return p.Fingerprint == fingerprint && !rec.UpdatedAt.After(p.WrittenAt)
	})
}

// stampPastWrites returns rec's write time, moved a millisecond past the
// newest earlier write of its token known here (existing, the current
// record, the store's purge mark) when it is not later: a token handed out
// again (a managed identity's) is written after its earlier records and
// its purge whatever the replicas' clocks say, so that a mark covers none
// of its records written after the purge. A time further ahead than
// maxClockSkew is not followed.
func (c *Cache) stampPastWrites(ctx context.Context, ks *keyState, rec, existing *Record, now time.Time) time.Time {
	token := []byte(rec.AccessToken)
	latest := now.Add(maxClockSkew)
	var floor time.Time
	later := func(t time.Time) {
		if t.After(floor) && !t.After(latest) {
			floor = t
		}
	}
	for _, known := range []*Record{existing, ks.currentRecord()} {
		if known != nil && subtle.ConstantTimeCompare([]byte(known.AccessToken), token) == 1 {
			later(known.UpdatedAt)
		}
	}
	if purged, err := c.store.GetPurgeMark(ctx, PurgeMarkKey(ks.key)); err == nil {
		fingerprint := sha256.Sum256(token)
		for _, p := range purged {
			if p.Fingerprint == fingerprint {
				later(p.WrittenAt)
			}
		}
	}
	if rec.UpdatedAt.After(floor) {
		return rec.UpdatedAt
	}
	return floor.Add(time.Millisecond)
}

// rememberPurged keeps rec's token from being taken again here until it
// expires. The caller holds ks.mu.
func (ks *keyState) rememberPurged(rec *Record) {
	if ks.purged == nil {
		ks.purged = make(map[[32]byte]time.Time)
	}
	ks.purged[sha256.Sum256([]byte(rec.AccessToken))] = rec.AccessTokenExpiresAt
}

// rememberDropped keeps rec's token, dropped on a purge mark, from being
// taken again here in a record written no later than rec (an old copy put
// back) until it expires; the token written again later is taken. Those
// expired at now are forgotten. The caller holds ks.mu.
func (ks *keyState) rememberDropped(rec *Record, now time.Time) {
	if ks.dropped == nil {
		ks.dropped = make(map[[32]byte]droppedToken)
	}
	maps.DeleteFunc(ks.dropped, func(_ [32]byte, d droppedToken) bool { return !now.Before(d.expires) })
	ks.dropped[sha256.Sum256([]byte(rec.AccessToken))] = droppedToken{writtenAt: rec.UpdatedAt, expires: rec.AccessTokenExpiresAt}
}

// droppedToken is a token dropped on a purge mark: its newest record then,
// and when it expires.
type droppedToken struct{ writtenAt, expires time.Time }

// isPurged reports whether rec's token was purged from ks, or dropped in a
// record no older than rec.
func (c *Cache) isPurged(ks *keyState, rec *Record) bool {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	fingerprint := sha256.Sum256([]byte(rec.AccessToken))
	_, purged := ks.purged[fingerprint]
	d, dropped := ks.dropped[fingerprint]
	return purged || dropped && !rec.UpdatedAt.After(d.writtenAt)
}
