package binding

import (
	"crypto/rand"
	"encoding/hex"
	"sync"

	"go.uber.org/zap"

	"github.com/caddy-entra/caddy-entra/entra"
)

// A system-assigned managed identity is named nowhere in the config: every
// host's has the same entra.Client.CacheKey, so two hosts (two App Service
// apps, two VMs) sharing one Redis and key_prefix would share one record
// key and could inject each other's tokens. Its records are keyed by the
// identity its own tokens carry (tid and appid, learned from this process's
// first token): until then the application's record key is this process's
// own, and once learned the application is registered again under the
// identity's key (Rekeyer), shared with every replica of that same
// identity only.

// processRecordNonce keeps an unlearned system-assigned identity's record
// key apart from every other process's.
var processRecordNonce = func() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}()

// CacheKey is the tokencache.Application.CacheKey of client's tokens, and
// whether it still has to be learned (a system-assigned identity whose
// first token this process has not had yet).
func CacheKey(client *entra.Client) (string, bool) {
	base := client.CacheKey()
	if !client.SystemAssigned() {
		return base, false
	}
	// Learn takes only a token that names both; the check keeps a record
	// key from ever having an empty part, the same for every such host.
	if tenantID, clientID, ok := tokenIdentityFor(client).Learned(); ok && tenantID != "" && clientID != "" {
		return base + "\nidentity=" + tenantID + "/" + clientID, false
	}
	return base + "\nprocess=" + processRecordNonce, true
}

// Rekeyer registers an application whose CacheKey is still to be learned
// again under its learned identity's key, once: its Learned is the learned
// argument of Application, and it calls rekey in a goroutine of its own,
// after the fetch that taught it, never inside it.
type Rekeyer struct {
	once sync.Once
	// unlearnable says once that the identity's tokens cannot key it.
	unlearnable sync.Once
	name        string
	client      *entra.Client
	logger      *zap.Logger
	rekey       func()
}

// NewRekeyer returns the Rekeyer of the application name, whose tokens
// client gets; rekey registers it again (under CacheKey(client)).
func NewRekeyer(name string, client *entra.Client, logger *zap.Logger, rekey func()) *Rekeyer {
	return &Rekeyer{name: name, client: client, logger: logger, rekey: rekey}
}

// Learned is called after each successful fetch of the application, with
// why its token taught nothing (nil if it did). An identity whose tokens do
// not name its tenant and client (an IMDS-compatible endpoint that leaves
// the client claim out) keeps its per-process record key: it shares no
// token with any other process, as it cannot tell another host's apart.
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
