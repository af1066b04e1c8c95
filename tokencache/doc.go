// Package tokencache is the two-level cache of client-credentials access
// tokens: a per-process level (L1) in front of a shared store (L2: Redis
// through tokencache/redisstore, or an in-process MemoryStore), with a
// cross-replica refresh lock so that a fleet makes one token request per
// refresh, not one per replica.
//
// The package knows nothing of Caddy or of Entra ID: each Application
// carries the FetchFunc that obtains a token (its errors say how to retry
// through FetchError), and the cache decides when to call it. Cache.Register
// returns a Handle, which serves the application until Release and answers
// after it too, so a config reload needs no grace period. Handles with the
// same record key share its record, refreshes and backoff.
//
// Guarantees:
//   - A valid token in L1 is returned without I/O and without taking any lock
//     a refresh holds; never one with RefreshWindow or less left.
//   - Tokens are refreshed in the background before they enter
//     RefreshWindow, while callers keep the current token; a caller waits
//     only when none is usable, and then at most WaitTimeout.
//   - Per record key, one replica fetches while the others wait for its
//     pub/sub announcement (polling as a fallback); its lock is extended
//     while the fetch runs and frees within LockTTL if it dies.
//   - A failed fetch is never cached as a token. It starts a backoff, kept
//     in process and in the store (BackoffKey) so the whole fleet obeys it
//     (transient failures 1s doubling to 60s, never before a Retry-After;
//     permanent ones 5s doubling to 5min), during which callers without a
//     usable token get an *Error at once.
//   - A failing store (Redis slow, hung or down) degrades to per-process
//     caching; it never fails a request, and it is logged once per outage.
//   - A record read from the store is a miss, logged as possible tampering,
//     when its token fails the checks of accept.go (an unsigned or
//     unreadable JWT, an expiry that is not its exp, a lifetime longer than
//     this replica's own tokens allow) or, with Application.VerifyStored,
//     does not match the application's identity (see Store.Authenticates).
//   - Access tokens, secrets and keys never appear in errors, logs or fmt
//     output of Record.
//
// Cache.NewExchanger serves tokens obtained for a caller's credential, one
// per user token (an on-behalf-of exchange): see exchange.go. They are never
// refreshed in the background, named in the store by a keyed hash of the
// user token, shared only through a store that seals records, and never
// used past the user token's own expiry.
package tokencache
