package redisstore

import (
	"context"
	"encoding/hex"
	"time"

	"github.com/caddy-entra/caddy-entra/tokencache"
)

// purgeMark is a purge mark as stored (sealed, bound to its own key, as
// records are): the purged records' SHA-256 fingerprints in hex.
type purgeMark struct {
	Purged []string `json:"purged"`
}

// SetPurgeMark writes a mark naming purged under key for ttl; not one over
// tokencache.MaxPurgeMarkBytes (the error wraps tokencache.ErrTooLarge).
func (s *Store) SetPurgeMark(ctx context.Context, key string, purged [][32]byte, ttl time.Duration) error {
	if ttl <= 0 {
		return errNonPositiveTTL
	}
	mark := purgeMark{Purged: make([]string, len(purged))}
	for i, fingerprint := range purged {
		mark.Purged[i] = hex.EncodeToString(fingerprint[:])
	}
	raw, err := s.marshal(key, mark, tokencache.MaxPurgeMarkBytes, "purge mark")
	if err != nil {
		return err
	}
	return s.set(ctx, key, raw, ttl, "purge mark")
}

// GetPurgeMark reads the fingerprints the mark under key names, skipping
// malformed ones. One that does not open or decode, or is over
// tokencache.MaxPurgeMarkBytes (not read), is an error wrapping
// tokencache.ErrNotFound.
func (s *Store) GetPurgeMark(ctx context.Context, key string) ([][32]byte, error) {
	raw, err := s.getBounded(ctx, key, tokencache.MaxPurgeMarkBytes, "purge mark")
	if err != nil {
		return nil, err
	}
	var mark purgeMark
	if err := s.unmarshal(key, raw, "purge mark", &mark); err != nil {
		return nil, err
	}
	purged := make([][32]byte, 0, len(mark.Purged))
	for _, fingerprint := range mark.Purged {
		if b, err := hex.DecodeString(fingerprint); err == nil && len(b) == 32 {
			purged = append(purged, [32]byte(b))
		}
	}
	return purged, nil
}
