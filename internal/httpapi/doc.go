// Package httpapi is the refresher's HTTP API: business servers read the
// current token from it and report tokens WeChat refused (the passive
// refresh WeChat's documentation asks a central token server to offer).
//
// Routes:
//
//	GET  /v1/apps/{appid}/token       current token
//	POST /v1/apps/{appid}/invalidate  {"access_token":"<the token that failed>"} → current token
//	GET  /healthz                     the process is up
//	GET  /readyz                      Redis reachable and a leader exists (503 with the reason if not)
//	GET  /metrics                     Prometheus exposition from the configured Gatherer
//
// With Config.Tickets (tickets.go), for the kinds Config.AppTickets lists:
//
//	GET  /v1/apps/{appid}/tickets/{jsapi|wx_card}  {"ticket","expires_in","expires_at","version"}
//	POST /v1/apps/{appid}/jssdk-config    {"url":"<page>"} → {"appId","timestamp","nonceStr","signature"}
//	POST /v1/apps/{appid}/card-signature  card fields → {"timestamp","nonceStr","signature","signType"}
//
// A signature is made only with a ticket live at that moment (503 with
// Retry-After otherwise); a key with page hosts may sign only their pages
// (403).
//
// Token answers are {"access_token","expires_in","expires_at","version"}:
// expires_in is the usable life left in whole seconds and expires_at the
// moment the refresher stops handing the token out (RFC 3339, UTC), a
// margin before WeChat's own expiry. Every error is {"error":"..."}.
//
// Statuses: 400 malformed body or token, 401 missing or wrong key (with
// WWW-Authenticate: Bearer), 403 app not allowed for the key (also for an
// unknown app, so a restricted key cannot probe which apps exist), 404
// unknown app or route, 405 wrong method (with Allow), 413 body over 4 KiB,
// 415 body not application/json, 429 invalidations over the key's rate,
// passive refreshes over the app's fleet-wide rate, or the app's daily
// quota/budget exhausted (Retry-After), 502 WeChat failed, 503
// Redis unreachable with no token in memory, 504 timed out waiting for a
// fetch.
//
// The /v1 routes need "Authorization: Bearer <key>" when API keys are
// configured. Keys are compared in constant time, against every configured
// key, through their SHA-256 so not even their length leaks; each key
// names the apps it may read ("*" for all). /healthz, /readyz and /metrics
// are open, as probes and scrapers expect; they reveal app ids at most.
//
// Invalidations are rate-limited per API key, in each process: the cache
// already turns a thousand reports of the same dead token into one fetch,
// costs nothing for a token that is not the current one, and limits real
// mints per app fleet-wide; this limit bounds what one confused or hostile
// client can cost in Redis round trips, and only that client is slowed.
//
// No log line carries a token or a key: tokens appear only as
// wechat.Fingerprint, keys only by name.
package httpapi
