// Package scale holds the scale run (make scale): one leader refreshing a
// fleet of up to 100,000 apps on a real redis-server and a fake WeChat in
// a child process, both on loopback. It measures what issue 12 asks for:
// the cold start until every app has a token, a new leader's takeover of
// the warm Redis (its first pass, and what it fetches), the fetch traffic
// in 5 s windows after each, the /metrics scrape (time, size, Redis
// commands), the leader's heap and RSS per app, Redis memory per app, and
// the status writer's dropped records.
//
// The run is a test, skipped unless TK_SCALE_APPS is set (make scale sets
// it); TestScaleShort is the same run at 2,000 apps with the figures
// asserted loosely, part of make test. Every phase is bounded in time.
// Nothing here is a library: it has no exported API.
package scale
