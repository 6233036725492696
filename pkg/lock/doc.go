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
// # Leader election
//
// The lease is a redsync mutex under ElectorConfig.Name whose expiry is
// LeaseDuration. Its value is Identity + "/" + 16 random base64url
// characters: unique per term, so a renewal or release can only touch the
// term that wrote it, and readable, so Elector.Leader can name the holder.
//
// The durations must satisfy LeaseDuration > RenewDeadline > RetryPeriod > 0
// (NewElector rejects anything else):
//
//   - A candidate tries to take the lease every RetryPeriod, plus up to
//     CampaignJitter of it at random.
//   - The leader extends the lease every RetryPeriod. Each extension resets
//     it to LeaseDuration in Redis.
//   - The leader stops leading the moment an extension is refused (the key
//     expired or holds another value) or RenewDeadline has passed since the
//     start of its last successful extension, even if a Redis call is still
//     hanging. Stopping means, in this order: IsLeader turns false, the
//     ctx given to OnStartedLeading is cancelled, the lease is released (in
//     the background), OnStoppedLeading is called. The elector then
//     campaigns again.
//   - Because RenewDeadline < LeaseDuration, a leader cut off from Redis
//     stops before its lease can expire and pass to another replica, as
//     long as its process is not paused and clocks run at similar rates.
//     A paused leader can still believe it leads after its lease expired:
//     work done under the lead must be fenced (compare-and-set) anyway.
//   - When Run's context is done, a leader releases the lease at once, so a
//     standby takes over within about RetryPeriod instead of waiting for
//     the lease to expire. A leader that crashes is replaced within
//     LeaseDuration plus RetryPeriod (and jitter).
//
// Callbacks never wait for Redis. OnStartedLeading runs in its own goroutine
// and must return soon after its ctx is cancelled: the elector waits for it
// before campaigning again and before Run returns.
package lock
