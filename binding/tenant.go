package binding

import (
	"context"
	"sync"

	"github.com/caddy-entra/caddy-entra/entra"
)

// tenantResolutions holds the process's one resolution of each tenant
// domain (by OpenID configuration URL), shared by reloads. A failure is
// not retried: the tenant is then learned from the first token.
var tenantResolutions sync.Map // string -> *tenantResolution

// tenantResolution is done once done is closed.
type tenantResolution struct {
	done     chan struct{}
	tenantID string
	err      error
}

// tenantResolver returns, for a tenant given by domain name (else nil),
// what resolves it once before an unsealed record is checked; without it a
// replica would trust the store only after a token request of its own.
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
