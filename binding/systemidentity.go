package binding

import (
	"crypto/rand"
	"encoding/hex"
	"sync"

	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/entra"
)

// Every host's system-assigned identity has the same CacheKey: hosts
// sharing a Redis could inject each other's tokens. So its records are
// keyed per process until its first token names it (tid, appid), then by
// that identity (Rekeyer).

// processRecordNonce keys an unlearned identity's records per process.
var processRecordNonce = func() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}()

// CacheKey is the record key of client's tokens, and whether it still has
// to be learned.
func CacheKey(client *entra.Client) (string, bool) {
	base := client.CacheKey()
	if !client.SystemAssigned() {
		return base, false
	}
	// Never an empty part, which would be the same for every such host.
	if tenantID, clientID, ok := tokenIdentityFor(client).Learned(); ok && tenantID != "" && clientID != "" {
		return base + "\nidentity=" + tenantID + "/" + clientID, false
	}
	return base + "\nprocess=" + processRecordNonce, true
}

// Rekeyer calls rekey once the identity is learned, in a goroutine of its
// own (never inside the fetch that taught it).
type Rekeyer struct {
	once        sync.Once
	unlearnable sync.Once // warns once that its tokens cannot key it
	name        string
	client      *entra.Client
	logger      *zap.Logger
	rekey       func()
}

// NewRekeyer returns the Rekeyer of the application name.
func NewRekeyer(name string, client *entra.Client, logger *zap.Logger, rekey func()) *Rekeyer {
	return &Rekeyer{name: name, client: client, logger: logger, rekey: rekey}
}

// Learned is called after each successful fetch with why its token taught
// nothing (nil if it did); an identity its tokens do not name keeps its
// per-process key.
func (r *Rekeyer) Learned(learnErr error) {
	if _, unlearned := CacheKey(r.client); unlearned {
		if learnErr != nil {
			r.unlearnable.Do(func() {
				r.logger.Warn("the system-assigned managed identity's tokens do not name its tenant and client: "+
					"its tokens are fetched by this process alone and never shared through the token store",
					zap.String("application", r.name), zap.Error(learnErr))
			})
		}
		return
	}
	r.once.Do(func() { go r.rekey() })
}
