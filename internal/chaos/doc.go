// Package chaos drives the real tokenkeeper processes through faults and
// reports what the upstream saw.
//
// Run starts, all on 127.0.0.1: a real redis-server; the fake WeChat of
// package wechattest, in this process, so its counters are read directly;
// refresher replicas (the real binary); and reader processes (the chaos
// binary re-executed as "chaos reader"), each sharing the tokens through
// pkg/tokencache exactly as an application would: take the token, call a
// business API with it, and on 40001/40014/42001 report it with Invalidate
// and retry once. Each reader also runs gateway readers (sdk.go):
// goroutines that behave like a WeChat SDK of another language pointed at
// the replicas' WeChat-compatible gateways, each with a token cache of its
// own, a gateway credential for a secret, and fail-over to the next
// replica when one does not answer. Each reader reaches Redis through a TCP proxy of its own
// in this process, so a fault can cut that one reader off.
//
// On a schedule it prints, it kills the leader (and restarts it), freezes
// the process that holds an app's fetch lock for longer than the lock's
// expiry, restarts Redis empty, pauses Redis for a few seconds, and makes
// the upstream misbehave. Through the readers' proxies it also cuts one
// reader off Redis (a black hole or a refusal) while a replica's HTTP
// invalidate replaces a token, for longer than the replaced token lives
// (partition); and silences one reader's pub/sub connections while a
// token is replaced, then drops them so go-redis resubscribes
// (lost-announcement). And it writes malformed records, built from the
// live ones by a table of named mutations, into live apps' record keys
// (poison-record), then watches each key until a new token replaces the
// poison. Everything it started is killed when it returns, whatever the
// reason.
//
// The report counts what the fake saw: tokens minted per app against the
// ideal for the run's length (one per refresh interval), business calls
// answered ok, 40001 and 42001 in total and per fault window, and quota
// used; and what the readers saw: the longest time without a live token,
// errors by kind, leader transitions and how long each takeover took.
// Check lists every broken invariant; no fault excuses a dead token except
// the data loss of a Redis restart, whose window is reported on its own.
// Each fault's window is checked on its own too: no dead-token answer for
// its apps or its reader; every poisoned record replaced by a new token
// within a near-cache period, a lock TTL and a fetch timeout (plus a
// second), with no more mints from the poison to the window's end than
// the refreshes due, one for the poison and one per other fault there.
//
// Who holds a fetch lock is found without trusting any process's word: the
// fake's listener is wrapped, and a token request's source port is mapped
// to its process through /proc (Linux). A classic fetch is only ever sent
// under the app's lock, so the process sending it is the holder; it is
// frozen before its request reaches the fake. That mapping is Linux-only
// (fault_sockets_linux.go); elsewhere it reports that it cannot find the
// holder.
//
// # Layout: four jobs, one file group each
//
// The package does four jobs, each in files of its own:
//
//   - orchestration: cli.go (the command line), config.go, run.go (start
//     everything, run the schedule, stop everything), procs.go and
//     procattr_*.go (children), redis.go, replicas.go, upstream.go (the fake
//     behind a recording listener);
//   - faults: fault.go (the schedule and the process and Redis faults),
//     fault_partition.go, fault_poison.go and fault_record.go (the
//     malformed records), fault_proxy.go (the readers' Redis proxies),
//     fault_sockets_*.go (which process sent a request);
//   - reader: reader.go, the "chaos reader" process, with signing.go (its
//     page signers) and sdk.go (its gateway readers);
//   - report: report.go, what the run saw and every invariant it checks.
//
// They are files, not packages, because all but the reader share one run:
// a fault claims apps, freezes children of the process table, cuts a
// reader's proxy and leaves its window in the record the report judges;
// packages would export that state only to pass it back and forth inside
// one tool. The reader shares the report's wire types (ReaderLine, Gap,
// DeadCall). No job restates a library rule: the key names, the record
// layout, the usable life and refresh interval, the cache's configuration
// rules and the error classes are tokencache's and wechat's, imported
// (tokencache.RecordKey, LockKey, IntentsKey, EventsChannel, RecordFields,
// Config.Lifetimes, Config.Validate, Sentinel; wechat.ClassName,
// ClassifyBusiness).
package chaos
