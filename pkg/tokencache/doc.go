// Package tokencache shares one live WeChat access token per app across a
// fleet of processes, through Redis.
//
// Every process reads the token from Redis and keeps a near copy in memory.
// When the token is missing or due for refresh, exactly one process in the
// whole fleet fetches a new one: an in-process single-flight first, then a
// redsync lock per app (package lock), then a second check of Redis inside
// the lock, so a process that waited for the lock never fetches again what
// another has just stored.
//
// # What is guaranteed
//
// Correctness does not rest on the lock. A Redis lock with an expiry can be
// held by two processes at once (one was paused past the expiry), and WeChat
// has no fencing of its own: a classic fetch invalidates the previous token
// five minutes later whether or not anyone stores its reply. So:
//
//   - Every write is one Lua script that compare-and-sets on the record's
//     version: a late writer never overwrites a newer token.
//   - Before a classic fetch is sent, the stored token's usable life is
//     capped so that it leaves Redis, and every near cache, before the
//     overlap window that fetch opens can end. A fetch whose reply is lost,
//     a crash mid-fetch and a refused write all leave at most a capped token
//     behind, which is replaced in time.
//   - Each fetch registers an intent (with a deadline) in Redis; a writer that
//     sees another fetch in flight caps its own token, because that other
//     fetch may invalidate it.
//   - A cap never goes below the capped token's own fetch time plus the cap
//     window: only a mint after that fetch can kill it. And when WeChat's own
//     clock (the Date of both replies, at least issueOrderSlack apart) proves
//     which of two tokens was minted last, a late writer keeps the newest,
//     its own or the stored one, and caps nothing.
//   - Readers never wait on WeChat in steady state: a token that is due is
//     still served while one background refresh runs.
//   - A Redis error is never taken for a miss: the near-cached token is served
//     until its own usable end, then a clear error is returned. Classic apps
//     never fetch without the lock; stable apps may.
//
// What is assumed: WeChat handles a request before that fetch's deadline
// (its send plus the fetch timeout), or never. The fetch's intent stops
// counting at the deadline, and a token whose own fetch started after it is
// known to be newer than anything that fetch could mint.
//
// What is not guaranteed: a process frozen in the microseconds between its
// last deadline check and the write of its request to the socket, and thawed
// after its intent expired, can still mint a token nobody knows about. The
// window is as small as Go allows; WeChat offers nothing to close it.
//
// # The Redis record
//
// One string key per app, KeyPrefix + "{" + appID + "}:token", holds
//
//	tk1|<version>|<usable_until_ms>|<refresh_at_ms>|<expires_at_ms>|<fetched_at_ms>|<issued_at_ms>|<access_token>
//
// Times are Unix milliseconds; issued_at is WeChat's clock, from its reply's
// Date header (0: unknown). A reader in any language splits on the first
// seven "|" and uses the token while now < usable_until. The key's TTL ends
// at usable_until. All keys of one app share the {appID} hash tag, so every
// script runs on Redis Cluster. Changes are announced on the channel
// KeyPrefix + "events" as "<appID> <version> <usable_until_ms> <fetched_at_ms>".
package tokencache
