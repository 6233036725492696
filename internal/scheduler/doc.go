// Package scheduler refreshes every app's token ahead of expiry, on the
// leader only.
//
// One goroutine keeps all apps in a timer heap (container/heap) keyed by
// when each is next due, and sleeps on a single timer until the earliest.
// Due apps go to a small fixed pool of workers, so at most MaxConcurrent
// Refresh calls run at once: apps that all come due together (a cold
// start) are worked through MaxConcurrent at a time instead of stampeding
// Redis and WeChat.
//
// When Run starts, a Refresher that is also a BatchPeeker
// (tokencache.Cache.PeekMany) has every app's record read in pipelined
// batches, and each app is planned at its record's RefreshAt: a new leader
// on a warm Redis of 100,000 apps schedules them all in seconds and
// fetches nothing that is not due. Apps without a usable, not yet due
// record (or whose read failed) are due at once; the most urgent run
// first.
//
// When an app is next due depends on how its refresh ended (see Class):
//
//   - ok: at the token's RefreshAt plus jitter, at most MaxJitter and at
//     most a tenth of the window between RefreshAt and UsableUntil, so a
//     fleet of apps fetched together drifts apart without eating into the
//     window meant for retries;
//   - held (*tokencache.HeldError): when the cache lifts the hold, plus
//     jitter; asking earlier would only be refused;
//   - quota (45009): the next Beijing midnight, when WeChat resets it;
//   - budget (tokencache.ErrBudgetExceeded): every 5 minutes until Beijing
//     midnight; a retry costs nothing upstream and notices an operator
//     raising the budget;
//   - minute_limit (45011): 60 s later, as WeChat asks;
//   - config (wrong secret, bad appid, IP not whitelisted, ...): never again
//     in this Scheduler's life, with an ERROR log; retrying cannot help
//     until an operator changes the configuration and restarts;
//   - transient and unavailable (anything else, including Redis outages and
//     timeouts), and stale (a success that returned a token already due,
//     which is what tokencache serves from memory while Redis is down):
//     exponential backoff from 1 s to 1 min with jitter.
//
// A record can also change under the scheduler: another process stores a
// token, or caps the stored one (a passive refresh whose fetch lost its
// reply), which leaves the token a few minutes. Changed, wired to
// tokencache's Hooks.OnChange, re-reads that app's record (Peek, which
// never fetches) on a free worker and moves its next run to the record's
// RefreshAt plus jitter; bursts coalesce to one read under way and one
// after it. It costs nothing in steady state: the cache does not report the
// changes this process made itself (but for a rare race between its own
// write and the announcement of it, which costs one read), and a replica
// that does not lead ignores them.
//
// Run returns as soon as its context is done, which is how the leader stops
// refreshing the moment it loses the lead; it may be called again for the
// next term.
package scheduler
