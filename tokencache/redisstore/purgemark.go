package redisstore

import (
	"context"
	"encoding/hex"
	"time"

	"github.com/caddy-entra/caddy-entra/tokencache"
)

// purgeMark is a purge mark as stored (sealed, bound to its own key, as
// records are): each purged token's SHA-256 in hex and its newest write.
type purgeMark struct {
	Purged []purgedToken `json:"purged"`
}

type purgedToken struct {
	SHA256    string    `json:"sha256"`
	WrittenAt time.Time `json:"written_at"`
}

// SetPurgeMark writes a mark naming purged under key for ttl; not one over
// tokencache.MaxPurgeMarkBytes (the error wraps tokencache.ErrTooLarge).
func (s *Store) SetPurgeMark(ctx context.Context, key string, purged []tokencache.PurgedToken, ttl time.Duration) error {
	if ttl <= 0 {
		return errNonPositiveTTL
	}
	mark := purgeMark{Purged: make([]purgedToken, len(purged))}
	for i, p := range purged {
		mark.Purged[i] = purgedToken{SHA256: hex.EncodeToString(p.Fingerprint[:]), WrittenAt: p.WrittenAt}
	}
	raw, err := s.marshal(key, mark, tokencache.MaxPurgeMarkBytes, "purge mark")
	if err != nil {
		return err
	}
	return s.set(ctx, key, raw, ttl, "purge mark")
}

// GetPurgeMark reads what the mark under key names, skipping malformed
// entries. One that does not open or decode, or is over
// tokencache.MaxPurgeMarkBytes (not read), is an error wrapping
// tokencache.ErrNotFound.
func (s *Store) GetPurgeMark(ctx context.Context, key string) ([]tokencache.PurgedToken, error) {
	raw, err := s.getBounded(ctx, key, tokencache.MaxPurgeMarkBytes, "purge mark")
	if err != nil {
		return nil, err
	}
	var mark purgeMark
	if err := s.unmarshal(key, raw, "purge mark", &mark); err != nil {
		return nil, err
	}
	purged := make([]tokencache.PurgedToken, 0, len(mark.Purged))
	for _, p := range mark.Purged {
		if b, err := hex.DecodeString(p.SHA256); err == nil && len(b) == 32 {
			purged = append(purged, tokencache.PurgedToken{Fingerprint: [32]byte(b), WrittenAt: p.WrittenAt})
		}
	}
	return purged, nil
}
