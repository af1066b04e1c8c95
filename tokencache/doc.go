// Package tokencache is the two-level cache of client-credentials access
// tokens: a per-process level (L1) in front of a shared store (L2: Redis, or
// an in-process MemoryStore when no Redis is configured), with a
// cross-replica refresh lock so that a fleet makes one token request per
// refresh, not one per replica.
//
// The package knows nothing of Caddy or of Entra ID: each Application
// carries the FetchFunc that obtains a token, and the cache decides when to
// call it.
//
// Guarantees:
//   - A valid token in L1 is returned without I/O and without taking any lock
//     a refresh holds.
//   - A token is never returned with RefreshWindow or less left.
//   - A failed fetch is never cached, in L1 or in the store.
//   - A failing store (Redis slow or down) degrades to per-process caching;
//     it never fails a request, and it is logged once per outage.
//   - Access tokens never appear in errors, logs or fmt output of
//     ClientCredential.
package tokencache
