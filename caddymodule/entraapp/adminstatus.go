package entraapp

import (
	"slices"
	"strings"
	"sync/atomic"
	"weak"
)

// runningApp is the newest committed entra app, which the admin API acts
// on. Caddy provisions admin modules before apps, and a reload commits the
// new config before stopping the old, so Stop clears it only if still its
// own.
var runningApp atomic.Pointer[App]

// startOperations hands the admin API to a and starts the prefetching.
func (a *App) startOperations() {
	a.lifecycle.replaced = weak.Make(runningApp.Swap(a))
	for _, name := range a.ApplicationNames() {
		if h, ok := a.handle(name); ok && a.prefetches(name) {
			h.Prefetch()
		}
	}
}

// stopOperations takes the admin API back from a: to the app a replaced
// when that one still runs (Caddy refused a's config after it committed,
// when finishing its setup failed), with the cache's logs; else to none.
func (a *App) stopOperations() {
	var prev *App
	if a.lifecycle != nil { // nil: Provision failed early
		a.lifecycle.stopped.Store(true)
		if prev = a.lifecycle.replaced.Value(); prev != nil && prev.lifecycle.stopped.Load() {
			prev = nil
		}
	}
	if runningApp.CompareAndSwap(a, prev) && prev != nil {
		prev.takeLogs()
	}
}

// prefetches reports whether name's token, if it has a handle, is
// prefetched.
func (a *App) prefetches(name string) bool {
	if app := a.Applications[name]; app != nil && app.Prefetch != nil {
		return *app.Prefetch
	}
	return a.Prefetch
}

// status describes the configured application name's token from its
// handle's snapshot (no I/O); an on-behalf-of application has neither.
func (a *App) status(name string) tokenInfo {
	info := tokenInfo{ApplicationName: name}
	if i := slices.IndexFunc(a.resolved, func(ra resolvedApplication) bool { return ra.Name == name }); i >= 0 {
		info.Identity = clientInfoOf(a.resolved[i].Client)
	}
	if e := a.exchangers[name]; e != nil {
		info.Scope, info.OnBehalfOf = strings.Join(e.app.Scopes, " "), true
		return info
	}
	h, _ := a.handle(name)
	st := h.Status()
	info.Scope, info.RecordKey = h.Scope(), h.Key()
	info.Source, info.NextRefreshAt = string(st.Source), timeOrNil(st.NextRefresh)
	if rec := st.Record; rec != nil {
		info.withToken(rec.AccessToken, rec.AccessTokenExpiresAt)
		info.CreatedAt, info.UpdatedAt = timeOrNil(rec.CreatedAt), timeOrNil(rec.UpdatedAt)
		info.Usable = &st.Usable
	}
	if f := st.Failure; f != nil {
		info.Backoff = backoffOf(f)
	}
	return info
}
