package entratest

import "time"

// Issued is a token the token endpoint issued, as OnIssue reports it.
type Issued struct {
	Resource    string // aud before any v2.0 rewriting, e.g. https://redis.azure.com
	ObjectID    string // oid: the client's service principal, or the user's
	AccessToken string
	ExpiresAt   time.Time
	Claims      string // the request's claims parameter, "" for none
}

// OnIssue calls f with each token the token endpoint issues (client
// credentials and on-behalf-of), before the response is written: a test
// can make a server accept the token before the client has it, as Azure
// Cache for Redis accepts Entra tokens as passwords. nil stops the calls.
func (e *Emulator) OnIssue(f func(Issued)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.onIssue = f
}

func (e *Emulator) notifyIssued(t Issued) {
	e.mu.Lock()
	f := e.onIssue
	e.mu.Unlock()
	if f != nil {
		f(t)
	}
}
