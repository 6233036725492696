// Package gateway is a WeChat-compatible front end to the token cache: an
// SDK in any language (co-wechat-api, EasyWeChat, WxJava, wechatpy, ...)
// gets fleet-safe tokens, tickets and retries by changing only its API host
// and using a gateway credential in place of its AppSecret.
//
// It speaks WeChat's paths and WeChat's error shape: every answer it makes
// itself is HTTP 200 with {"errcode":N,"errmsg":"..."} and a header
// X-Tokenkeeper-Gateway naming why, so an SDK reacts as it would to WeChat
// and an operator can tell the gateway's answers from WeChat's.
//
// # Surface
//
//   - GET /cgi-bin/token?grant_type=client_credential&appid=A&secret=S and
//     POST /cgi-bin/stable_token answer {"access_token","expires_in"} from
//     the cache (Tokens.Token: the near copy in steady state; upstream only
//     on a true miss, and then once for the fleet). The access_token is the
//     gateway's own for that credential ("tkgw_" and an HMAC of WeChat's
//     token under the credential's key: the same on every replica, a new
//     one when WeChat's changes); WeChat's token never leaves the gateway.
//     expires_in is the token's usable life left, rounded down. S is a gateway credential
//     allowed for A (or A's real AppSecret when Config.AcceptAppSecret is
//     set), compared in constant time against every credential; a wrong one
//     answers 40125, an unknown appid 40013. force_refresh=true is never
//     sent upstream: it reports the current token as bad through
//     Tokens.Invalidate, which asks WeChat (with a call that mints nothing)
//     before it spends a fetch.
//   - GET /cgi-bin/ticket/getticket?access_token=T&type=jsapi|wx_card is
//     answered from Config.Tickets (relayed upstream like any business call
//     while none is set).
//   - Business calls under the API prefixes (Config.Prefixes, every method)
//     carrying ?access_token=T, where T is a token the gateway handed out,
//     go upstream with the app's current token. A T the gateway does not
//     know is answered 40001 here and never forwarded, so the relay is
//     closed to strangers; the SDK refetches through the gateway and retries.
//   - /apps/{appid}/<API path> with Authorization: Bearer <credential>:
//     the same relay for callers without an SDK; the token is injected.
//   - /sns/oauth2/access_token and /sns/jscode2session: the caller sends its
//     gateway credential as the secret; the real AppSecret is put in its
//     place on the way up, and is removed from the reply's body and headers
//     on the way back. It is never logged.
//
// # What is guaranteed
//
//   - A business call is sent upstream only with the token the cache says is
//     current, never with the caller's: an SDK holding a superseded token
//     makes no dead call. When WeChat still answers 40001, 40014 or 42001,
//     the token sent is reported through Tokens.Invalidate and, if the body
//     was buffered (at most Config.RetryBuffer bytes), the call is sent once
//     more with the replacement. A larger body is streamed and never
//     retried, and every reply to such a request carries X-Tokenkeeper-Retry
//     saying so.
//   - Requests go only to Config.UpstreamURL's scheme and host, whatever the
//     caller names; redirects are passed back, never followed; hop-by-hop
//     headers and the caller's Authorization are not forwarded.
//   - Memory per request is bounded: at most RetryBuffer bytes of request
//     body and wechat.MaxReplyBytes of reply are held; the rest streams
//     through a fixed buffer. Worst case for the process: MaxConcurrent x
//     (RetryBuffer + wechat.MaxReplyBytes).
//   - Limits answer in WeChat's shape: over MaxConcurrent requests in flight
//     -1 (system busy), over Timeout -1, a body over MaxBody 45001. Timeout
//     bounds the whole exchange: a reply already streaming when it ends is
//     cut short (size it for the largest media download).
//   - Tokens appear in logs and metrics only as wechat.Fingerprint;
//     credentials only by their configured name; the AppSecret never.
//
// # Recognising the tokens it handed out, across replicas
//
// Each gateway keeps a bounded map from the SHA-256 of every token it
// handed out to the app, the credential, the version of WeChat's token it
// stood for, and the time until which it honours it: the token's usable
// end as it was when handed out (the life the SDK was told) plus
// Config.HonourGrace. Replicas share these through a Ledger (in Redis,
// next to the token record: RedisLedger), written before the token is
// handed out, so a token handed out by replica 1 is recognised by replica 2
// on its first use (one Redis GET, then remembered locally). With no
// Ledger, or while it cannot be read or written, a replica recognises only
// what it handed out itself and answers 40001 for the rest: the SDK then
// fetches again through that replica and retries, so an outage costs a
// round trip, never a dead call upstream and never an open relay.
//
// A flood of junk tokens costs one bounded Ledger read each (there is no
// negative cache: a token is refused until it is found), within
// MaxConcurrent.
//
// # Revoking a credential
//
// Each credential's tokens are its own, and the record of a handed-out
// token names its credential. A credential removed by SetCredentials (a
// reload), or no longer allowed an app, is refused from the next request
// on: its token fetches answer 40125, and the tokens it already holds
// answer 40001 here and are not forwarded, on every replica that has the
// new list. The other credentials' tokens are untouched. Renaming a
// credential revokes its tokens too (the record holds the name). A caller
// that authenticated with the AppSecret holds tokens of the name
// "app-secret", cut off when AcceptAppSecret is turned off.
//
// What is not guaranteed: a token an SDK holds works only through a
// gateway; an SDK calling WeChat directly with it (a host left at
// api.weixin.qq.com) gets 40001. Point every API host of the SDK at the
// gateway.
package gateway
