// Package tokencache is the two-level cache of client-credentials access
// tokens: a per-process level (L1) in front of a shared store (L2: Redis
// through tokencache/redisstore, or an in-process MemoryStore), with a
// cross-replica refresh lock so that a fleet makes one token request per
// refresh, not one per replica. It knows nothing of Caddy or Entra ID: each
// Application carries the FetchFunc that obtains a token, and the cache
// decides when to call it. Cache.Register returns a Handle, which answers
// even after Release, so a config reload needs no grace period.
//
// Guarantees:
//   - A valid token in L1 is returned without I/O or locks; never one with
//     RefreshWindow or less left.
//   - Tokens are refreshed in the background before they enter
//     RefreshWindow; a caller waits only when none is usable, at most
//     WaitTimeout.
//   - Per record key, one replica fetches while the others wait for its
//     pub/sub announcement (or poll); its lock frees within LockTTL if it
//     dies.
//   - A failed fetch is never cached as a token. It starts a backoff, in
//     process and in the store (BackoffKey) for the whole fleet (transient
//     1s doubling to 60s, never before a Retry-After; permanent 5s doubling
//     to 5min), during which callers get an *Error at once. A permanent
//     failure of Handle.TryRefresh starts none: it is its callers' alone.
//   - A failing store degrades to per-process caching, logged once per
//     outage; it never fails a request.
//   - A store record whose token fails the checks of accept.go or
//     Application.VerifyStored is a miss, logged as possible tampering.
//   - A valid token whose record another process deleted is dropped only
//     when the purge mark a purge writes (PurgeMarkKey) names it, at most
//     once per PurgeInterval.
//   - Tokens, secrets and keys never appear in errors, logs or fmt output.
//
// Cache.NewExchanger serves tokens exchanged on a user's behalf, one per
// user token (see exchange.go): never refreshed in the background, named in
// the store by a keyed hash of the user token, shared only through a store
// that seals records, never used past the user token's expiry.
package tokencache
