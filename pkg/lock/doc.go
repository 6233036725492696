// Package lock provides the two kinds of Redis lock tokenkeeper needs, both
// built on redsync (github.com/go-redsync/redsync/v4):
//
//   - Mutex (Locker, RedisLocker): a short, expiring, single-attempt lock
//     per app, so that at most one process in a fleet fetches that app's
//     token at a time.
//   - Lease (Elector): leader election in client-go's style. One holder at a
//     time, renewed on a period, with callbacks when the lead is gained and
//     lost.
//
// What is and is not guaranteed. A Redis lock with an expiry is an efficiency
// device, not a correctness guarantee: a process that is paused (GC, SIGSTOP,
// a slow VM) can wake up after its lock expired and still act as if it held
// it, and a Redis failover can lose a lock that was just taken. Code that
// uses these locks must stay correct when two holders overlap; tokenkeeper
// does so with compare-and-set writes (see package tokencache), i.e. callers
// fence their writes. What the locks do guarantee is that, while Redis is
// healthy and processes are not paused past the expiry, only one holder acts
// at a time, so the upstream sees one fetch per refresh instead of one per
// instance.
//
// Both can live on several independent Redis masters instead of one
// deployment (NewRedisLocker with several clients, ElectorConfig.Quorum):
// redsync's Redlock, where a lock or the lease is held while a majority of
// the masters holds it. Losing a minority of them changes nothing; losing
// a majority stops every lock and lead (with Redis errors saying how many
// answered) until they return. It protects against one master's failover
// losing a just-written key; it does not remove the caveats below (a
// paused holder, clock drift), so writes stay fenced either way.
//
// # Leader election
//
// The lease is a redsync mutex under ElectorConfig.Name whose expiry is
// LeaseDuration. Its value is Identity + "/" + 16 random base64url
// characters: unique per term, so a renewal or release can only touch the
// term that wrote it, and readable, so Elector.Leader can name the holder.
//
// The durations must satisfy LeaseDuration > RenewDeadline > RetryPeriod > 0
// (NewElector rejects anything else). The schedule is client-go's, counted
// on ElectorConfig.Clock (the wall clock's monotonic readings by default):
//
//   - A candidate tries to take the lease at once, then every RetryPeriod
//     plus up to CampaignJitter of it at random.
//   - A renewal round starts RetryPeriod after the last successful
//     acquisition or renewal returned, so a slow call does not shorten the
//     next round. Within a round one extension at a time is tried, at once
//     and then every RetryPeriod after the previous attempt started (right
//     after it if it took longer). The first success ends the round and
//     schedules the next one; each success resets the lease to
//     LeaseDuration in Redis.
//   - The round fails, and the leader stops leading, when RenewDeadline has
//     passed since the round started or, if sooner, when the lease could
//     have expired in Redis: LeaseDuration less LeaseDriftFactor (1%) of it
//     after the start of the last successful acquisition or renewal (Redis
//     set the expiry after that instant). A reply that arrives at or after
//     that moment counts for nothing, and a call still hanging then is
//     abandoned. An extension that Redis refuses (the key expired, or holds
//     another value) ends the term at once.
//   - So a steady Redis latency d keeps the lead as long as d <
//     RenewDeadline and 2d + RetryPeriod < 0.99 LeaseDuration (for
//     15 s / 10 s / 2 s: up to about 6.4 s per call; for 3 s / 1.2 s / 1 s:
//     just under 1 s).
//
// Stepping down is, in this order: IsLeader turns false and
// LeaderCallbacks.OnIsLeaderChange(false) is called; the ctx given to
// OnStartedLeading is cancelled (also on shutdown: it is not a child of
// Run's ctx); the elector waits up to RenewDeadline for OnStartedLeading to
// return; OnStoppedLeading is called; the lease is released. The release is
// skipped when the lease was seen lost (nothing of ours to delete) and when
// OnStartedLeading has not returned within RenewDeadline: the lease then
// expires on its own, so no successor starts while this term's work may
// still run, and the elector campaigns again only once it returned. Nothing
// before the release waits on Redis. On shutdown (Run's ctx done) a standby
// takes over within about RetryPeriod; a leader that crashed is replaced
// within LeaseDuration plus RetryPeriod (and jitter) of its last renewal.
//
// What this guarantees, while Redis keeps its data, no process is paused
// and clocks run at rates within LeaseDriftFactor of each other: another
// candidate can take the lease only after this leader released it (which
// it does only after OnStartedLeading returned) or after it expired in
// Redis, and by the time it can expire this leader's IsLeader is false and
// its leading ctx is cancelled. Nobody sees the leading ctx done while
// IsLeader still says true.
//
// What it does not guarantee:
//   - Leading work that ignores its ctx can outlive the lead: after an
//     expiry (not a release) a successor may start while it still runs.
//   - A Redis that loses the key (a restart without persistence, FLUSHALL,
//     a failover to a replica that had not received it) lets another
//     candidate take the lease at once, while the old leader believes it
//     leads until its next renewal is refused: up to RetryPeriod (plus the
//     call's latency) later, or until its deadline if Redis also fails. Two
//     leaders overlap for that long.
//   - A process paused (GC, SIGSTOP, a VM migration) past its deadline
//     resumes believing it leads until its timers run, which may be after
//     its lease passed to another replica; its leading work may act first.
//
// Overlaps are therefore possible and rare; work done under the lead must
// be fenced (compare-and-set writes) anyway, as tokencache's are.
//
// Callbacks never wait for Redis. OnIsLeaderChange runs synchronously in
// Run and must return at once. OnStartedLeading runs in its own goroutine
// and must return soon after its ctx is cancelled.
package lock
