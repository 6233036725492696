// Package tokencmd is the refresher's one-shot token commands: `refresher
// token APPID` and `refresher invalidate APPID TOKEN`. They use the token
// cache straight over Redis with the replicas' configuration, so they need
// no running replica, and they print the same JSON as the HTTP API.
//
// Token may fetch from WeChat if no usable token is stored, exactly as a
// replica would (under the same lock and daily budget); Invalidate
// fetches only if the reported token is still the current one.
package tokencmd
