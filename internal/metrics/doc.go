// Package metrics holds tokenkeeper's Prometheus collectors.
//
// Everything is registered on a Registerer the caller supplies, so the
// process decides what else (Go runtime, process) is exported and tests use
// a fresh registry each. Event metrics (fetches, lock waits, leadership,
// HTTP requests) are fed by small methods the wiring calls from the cache's
// hooks, the elector's callbacks and the HTTP API. Per-app state (usable
// life left, token age, fetches today) is not pushed at all: it is read at
// scrape time from a func the wiring supplies, so 10,000 apps cost no
// goroutine and no update traffic between scrapes.
//
// No label ever carries a token or a secret: labels are app ids, fixed
// result names, HTTP route patterns and status codes. Every method is safe
// on a nil *Metrics, so callers need no "metrics enabled?" checks.
package metrics
