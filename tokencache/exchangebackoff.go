package tokencache

import "time"

// tenantBackoff is the backoff of an Exchanger's exchanges at one tenant,
// with the failure that started it (the cause of the errors it answers).
type tenantBackoff struct {
	Backoff
	cause error
}

// makeRoomForBackoff keeps the backoffs within ExchangeOptions.Tenants
// before one more is added: one that has ended goes first, else the one
// ending soonest. The caller holds e.mu. The tenants come from checked
// user tokens (the application's own and its allowed tenants), so the
// bound is reached only when Tenants is set too low.
func (e *Exchanger) makeRoomForBackoff(now time.Time) {
	for len(e.backoffs) >= e.opts.Tenants {
		victim, first := "", true
		for tenant, tb := range e.backoffs {
			if !now.Before(tb.Until) {
				victim = tenant
				break
			}
			if first || tb.Until.Before(e.backoffs[victim].Until) {
				victim, first = tenant, false
			}
		}
		delete(e.backoffs, victim)
	}
}
