package entraapp

import (
	"sync/atomic"

	"github.com/caddy-entra/caddy-entra/entra"
)

// runningApp is the newest started entra app: what the admin API
// (admin.api.entra) acts on. Caddy provisions admin modules before the
// config's apps, and a reload starts the new config before it stops the
// old one, so the app sets it in Start and clears it in Stop and Cleanup
// only if it is still the one set.
var runningApp atomic.Pointer[App]

// startOperations makes a the app of the admin API and starts the
// prefetching of the applications that ask for it.
func (a *App) startOperations() {
	runningApp.Store(a)
	for _, name := range a.ApplicationNames() {
		if h, ok := a.handle(name); ok && a.prefetches(name) {
			h.Prefetch()
		}
	}
}

// stopOperations hands the admin API over, if a still has it.
func (a *App) stopOperations() {
	runningApp.CompareAndSwap(a, nil)
}

// prefetches reports whether name's token is prefetched: never an
// on-behalf-of application's, which has no token of its own.
func (a *App) prefetches(name string) bool {
	if app := a.Applications[name]; app != nil && app.OnBehalfOf != nil {
		return false
	}
	if app := a.Applications[name]; app != nil && app.Prefetch != nil {
		return *app.Prefetch
	}
	return a.Prefetch
}

// remember keeps what the admin API shows of name's identity.
func (a *App) remember(name string, client *entra.Client) {
	if a.clients == nil {
		a.clients = make(map[string]clientInfo)
	}
	a.clients[name] = clientInfoOf(client)
}

// status describes name's token as the admin API shows it, from its
// handle's snapshot (no I/O); false if name is not configured.
func (a *App) status(name string) (tokenInfo, bool) {
	h, ok := a.handle(name)
	if !ok {
		return tokenInfo{}, false
	}
	st := h.Status()
	info := tokenInfo{
		ApplicationName: name,
		Scope:           h.Scope(),
		Identity:        a.clients[name],
		RecordKey:       h.Key(),
		Source:          string(st.Source),
	}
	if rec := st.Record; rec != nil {
		info.withToken(rec.AccessToken, rec.AccessTokenExpiresAt)
		info.CreatedAt = timeOrNil(rec.CreatedAt)
		info.UpdatedAt = timeOrNil(rec.UpdatedAt)
		usable := st.Usable
		info.Usable = &usable
	}
	info.NextRefreshAt = timeOrNil(st.NextRefresh)
	if f := st.Failure; f != nil {
		info.Backoff = backoffOf(f)
	}
	return info, true
}
