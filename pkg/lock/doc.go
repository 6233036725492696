// Package lock provides the two kinds of Redis lock tokenkeeper needs, both
// built on redsync (github.com/go-redsync/redsync/v4):
//
//   - Mutex: a short, expiring, single-attempt lock per app, so that at most
//     one process in a fleet fetches that app's token at a time.
//   - Lease (leader election): one holder at a time, renewed on a period,
//     with callbacks when the lead is gained and lost.
//
// What is and is not guaranteed. A Redis lock with an expiry is an efficiency
// device, not a correctness guarantee: a process that is paused (GC, SIGSTOP,
// a slow VM) can wake up after its lock expired and still act as if it held
// it, and a Redis failover can lose a lock that was just taken. Code that
// uses these locks must stay correct when two holders overlap; tokenkeeper
// does so with compare-and-set writes (see package tokencache). What the locks
// do guarantee is that, while Redis is healthy and processes are not paused
// past the expiry, only one holder acts at a time, so the upstream sees one
// fetch per refresh instead of one per instance.
package lock
