// Package backend opens what a refresher configuration describes: the
// Redis client and, over it, the token cache fed by the WeChat source.
// Every refresher process (a replica, or a one-shot token, invalidate or
// status command) starts here, so they all read the same keys the same
// way.
//
// It also holds what an operator needs to run Redis for tokenkeeper:
// the least-privilege ACL user's rule (ACLCommands, ACLRules, ACLSetUser:
// the only place it is written), the independent lock masters of
// redis.lock_addrs (Locks: the fetch locks and the lease on a Redlock
// majority), and the maxmemory-policy check (CheckEviction: anything but
// noeviction can silently reset the daily budget). What it does not do:
// it cannot make a Redis keep its data; it only says when it may not.
//
// A configuration the libraries refuse is reported as ErrConfig, which the
// command maps to its "bad configuration" exit code.
package backend
