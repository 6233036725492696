// Package metrics holds tokenkeeper's Prometheus collectors.
//
// Everything is registered on a Registerer the caller supplies, so the
// process decides what else (Go runtime, process) is exported and tests use
// a fresh registry each. Event metrics (fetches, lock waits, leadership,
// HTTP requests, tokens killed outside) are fed by small methods the wiring
// calls from the cache's hooks, the elector's callbacks and the HTTP API.
// The cache's own counters are read from its Stats at scrape time: the
// token hit path updates no metric. Per-app state (usable life left, token
// age, fetches today) is not pushed at all: it is read at scrape time from
// a func the wiring supplies, so 10,000 apps cost no goroutine and no
// update traffic between scrapes.
//
// The series (all prefixed tokenkeeper_):
//
//	fetches_total{app,result}            counter: upstream fetches by this process (tokencache FetchEvent.Result); {result} without per-app series
//	fetch_duration_seconds{result}       histogram: their duration
//	lock_waits_total{app}                counter: waits for another holder's fetch; no label without per-app series
//	lock_wait_duration_seconds           histogram: their duration
//	leader                               gauge: 1 while this replica leads
//	leader_transitions_total             counter: lead gained or lost
//	scheduler_refreshes_total{class}     counter: scheduler Refresh calls by outcome class
//	tokens_killed_outside_total{app}     counter: current tokens WeChat refused before their usable end (Hooks.OnKilledOutside)
//	http_requests_total{route,code}      counter: API requests by route pattern and status
//	http_request_duration_seconds{route} histogram: their duration
//	token_usable_seconds{app}            gauge, at scrape: usable life left (0 without a token); only the worst apps without per-app series
//	token_age_seconds{app}               gauge, at scrape: time since the token was fetched; likewise
//	quota_used_today{app}                gauge, at scrape: fleet-wide fetches this Beijing day (only from a source that knows it; KnownSource does not)
//	tokens_usable_seconds                histogram, at scrape, without per-app series: usable life left over the known apps
//	tokens_age_seconds                   histogram, at scrape, without per-app series: token age over the apps with a token
//	apps                                 gauge, at scrape: apps the source reported
//	apps_unknown                         gauge, at scrape: apps of which the process knows no token (in no token series)
//	cache_corrupt_records_total          counter, at scrape: corrupt records read from Redis (Stats)
//	cache_revalidations_total{result}    counter, at scrape: background re-reads of a near copy, ok or error (Stats)
//	cache_subscription_gaps_total        counter, at scrape: (re)subscriptions to the change channel (Stats)
//	invalidations_total{outcome}         counter, at scrape: passive-refresh reports, ignored, refuted or believed (Stats)
//
// Histograms carry no app label, so 10,000 apps add counters, not bucket
// sets.
//
// No label ever carries a token or a secret: labels are app ids, fixed
// result names, HTTP route patterns and status codes. Every method is safe
// on a nil *Metrics, so callers need no "metrics enabled?" checks.
package metrics
