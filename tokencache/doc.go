// Package tokencache is the two-level cache of client-credentials access
// tokens: a per-process level (L1) in front of a shared store (L2: Redis
// through tokencache/redisstore, or an in-process MemoryStore), with a
// cross-replica refresh lock so that a fleet makes one token request per
// refresh, not one per replica.
//
// The package knows nothing of Caddy or of Entra ID: each Application
// carries the FetchFunc that obtains a token, and the cache decides when to
// call it. Cache.Register returns a Handle, whose Token and PurgeRejected
// serve the application until Release and answer after it too (a token, or a
// retryable error once the Cache is closed), so a config reload needs no
// grace period. Handles with the same record key share its record,
// refreshes and backoff, and every fetch uses the newest live active
// handle's Fetch and credential (else the newest pending one's: see
// RegisterPending). Fetch errors tell the cache how to retry through
// FetchError; each call of Fetch is reported, classified as the backoff
// classifies it, to the Application's OnFetch.
//
// Guarantees:
//   - A valid token in L1 is returned without I/O and without taking any lock
//     a refresh holds.
//   - A token is never returned with RefreshWindow or less left.
//   - Tokens are refreshed in the background before they enter
//     RefreshWindow (at the endpoint's refresh_in, else at RefreshAhead of
//     their lifetime, with jitter), while callers keep the current token.
//   - A caller waits for a token only when none is usable, and then at most
//     WaitTimeout.
//   - Per record key, one replica fetches while the others wait for its
//     pub/sub announcement (polling as a fallback); its lock is extended
//     while the fetch runs and frees within LockTTL if it dies.
//   - A failed fetch is never cached as a token. It starts a backoff, kept
//     in process and in the store (BackoffKey) so the whole fleet obeys it:
//     transient failures 1s doubling to 60s, never before a Retry-After;
//     permanent ones 5s doubling to 5min. During it callers without a
//     usable token get an *Error at once (with RetryAfter while throttled,
//     Permanent after a permanent failure); callers with one never see the
//     failure.
//   - A failing store (Redis slow, hung or down) degrades to per-process
//     caching; it never fails a request, and it is logged once per outage.
//   - With encryption keys, records are sealed at rest (AES-256-GCM, bound
//     to their key); a record that does not decode or open is a miss.
//   - Whatever the store, a record read from it is a miss, logged as
//     possible tampering, when its token is an unsigned (alg none),
//     unreadable or encrypted JWT, one without exp or whose exp is not the
//     record's expiry, or one living longer than 1.5 times this replica's
//     own longest token for the key (24 hours before it has one); own
//     tokens are recorded with their exp (see accept.go).
//   - With Application.VerifyStored, a record read from the store is used
//     only if it matches the application's identity, or cannot be checked
//     but comes from a store that authenticates its records (Store.Authenticates).
//     A mismatch is a miss, logged as possible tampering without the token.
//     A replica whose own tokens cannot be checked, on a store that does not
//     authenticate, fetches them on its own without the store.
//   - Access tokens, secrets and keys never appear in errors, logs or fmt
//     output of Record.
package tokencache
