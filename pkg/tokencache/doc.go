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
//   - The near copy never outlives what Redis confirmed: it is served at most
//     until the earliest of its usable end, the last time Redis confirmed it
//     plus the overlap less the margin (a fetch that can kill it is sent after
//     that confirmation, and WeChat keeps it an overlap after such a fetch),
//     and, once a newer token was announced, that token's fetch plus the cap
//     window. Every store, cap and restore takes a new rev, carried by the
//     record and by its announcement; reads and announcements are ordered by
//     it, so an older message never undoes a newer state. A (re)subscription
//     to the change channel means messages may have been lost: every copy is
//     then confirmed before use.
//   - Readers never wait on WeChat in steady state: a token that is due is
//     still served while one background refresh runs. Nor on Redis while
//     their copy is current: one background read per app revalidates it.
//   - A Redis error is never taken for a miss: the near copy is served until
//     its horizon, then a clear error is returned. Classic apps never fetch
//     without the lock; stable apps may.
//   - A report costs a fetch only for a token that is current and that WeChat
//     refuses (asked through a Verifier, the verdict shared fleet-wide), and
//     passive refreshes are rate-limited fleet-wide and kept out of the daily
//     budget's reserve for scheduled refreshes.
//   - A record the scripts and the decoder do not both accept cannot exist:
//     they read one grammar (record.go; FuzzRecordGrammar). A corrupt record
//     is never served and is replaced by one fetch for the whole fleet.
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
// What is assumed as well: writers' clocks agree to well under a second
// (rev stays above the writer's clock, so it keeps growing across a Redis
// data loss; a writer whose clock is behind the last rev only delays, by up
// to the near max age, when others hear of its change).
//
// # The Redis record
//
// One string key per app, RecordKey(prefix, appID) = prefix + "{" + appID +
// "}:token", holds
//
//	tk2|<version>|<rev>|<usable_until_ms>|<refresh_at_ms>|<expires_at_ms>|<fetched_at_ms>|<issued_at_ms>|<access_token>
//
// in the grammar of record.go. Times are Unix milliseconds; issued_at is
// WeChat's clock, from its reply's Date header (0: unknown). A reader in any
// language splits on the first eight "|" and uses the token while now <
// usable_until. The key's TTL ends at usable_until. All keys of one app
// (keys.go) share the {appID} hash tag, so every script runs on Redis
// Cluster. Changes are announced on EventsChannel(prefix) as "<appID>
// <version> <rev> <usable_until_ms> <fetched_at_ms>"; rev 0 announces no
// change (a fetch that stored nothing: look again).
//
// # Tickets
//
// NewTickets builds a ticket cache per kind (jsapi_ticket, wx_card
// api_ticket): a Cache under TicketKeyPrefix whose Source fetches
// getticket with the token cache's current access token, so tickets get
// every guarantee above by the same code. See tickets.go for what the
// ticket source adds (reporting a refused access token, a reused ticket's
// life counted from its first sighting) and why a ticket cache has no
// Invalidate.
package tokencache
