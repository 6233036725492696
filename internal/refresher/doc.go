// Package refresher is one replica of tokenkeeper's central control
// server (中控服务器): it wires the token cache, the leader election, the
// refresh scheduler, the HTTP API, the Prometheus metrics and the
// last-fetch recorder together, and runs them until its context ends.
//
// Every replica serves tokens over HTTP from the shared Redis. The
// replica holding the lease also runs the scheduler, which refreshes each
// app's token ahead of expiry; when it loses the lease the scheduler's
// context ends. The tokenkeeper_leader gauge follows the elector's own
// leader flag: it turns 0 before the scheduler's context ends, so a
// replica never reports 1 once it knows it no longer leads (after a Redis
// data loss it learns that at its next renewal; see package lock for what
// the election does and does not guarantee). Shutdown first leaves the
// election (the scheduler stops, then the lease is released, so a standby
// takes over at once) while the HTTP server drains; both are bounded.
package refresher
