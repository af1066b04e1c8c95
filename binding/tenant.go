package binding

import (
	"context"
	"sync"

	"github.com/caddy-entra/caddy-entra/entra"
)

// tenantResolutions holds, per OpenID configuration URL
// (entra.Client.TenantDiscoveryURL), the one resolution of a tenant's
// domain name to its ID that a process makes: every identity of that
// tenant, and every config reload, shares it. A failed resolution is not
// retried; its identities learn the tenant from their own first token.
var tenantResolutions sync.Map // string -> *tenantResolution

// tenantResolution is one resolution, done once done is closed.
type tenantResolution struct {
	done     chan struct{}
	tenantID string
	err      error
}

// tenantResolver returns what makes tokenIdentity know its tenant before a
// record read from an unsealed store is checked, when client's tenant is a
// domain name (nil otherwise): the first call in the process resolves it
// through the tenant's OpenID configuration (entra.Client.ResolveTenantID,
// bounded by the client's timeout), the others wait for that one; a
// tenant already learned from the client's own token needs no resolving.
// Without it, each replica would trust the store's records only after a
// token request of its own.
func tenantResolver(client *entra.Client, tokenIdentity *entra.TokenIdentity) func() {
	discoveryURL := client.TenantDiscoveryURL()
	if discoveryURL == "" {
		return nil
	}
	return func() {
		if _, _, learned := tokenIdentity.Learned(); learned {
			return
		}
		resolution := &tenantResolution{done: make(chan struct{})}
		if existing, loaded := tenantResolutions.LoadOrStore(discoveryURL, resolution); loaded {
			resolution = existing.(*tenantResolution)
		} else {
			resolution.tenantID, resolution.err = client.ResolveTenantID(context.Background())
			close(resolution.done)
		}
		<-resolution.done
		if resolution.err == nil {
			_ = tokenIdentity.LearnTenant(resolution.tenantID)
		}
	}
}
