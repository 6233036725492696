// Package wechattest is a fake WeChat access-token server for tests, in
// the spirit of miniredis: start it in one line, point a client at its URL,
// move its clock, inject faults, and read what happened from its counters.
//
//	fake := wechattest.New(t, wechattest.WithApp("wx123", "s3cret"))
//	client := wechat.NewClient(fake.URL(), ...) // whatever your client takes
//
// It binds 127.0.0.1 only and shuts down when the test ends. NewServer
// does the same outside a test (the caller closes it); Handler mounts the
// same fake inside another http.Server, and NewHandler builds one with no
// listener of its own for that purpose.
//
// # Rules it follows
//
// GET /cgi-bin/token?grant_type=client_credential&appid=&secret= mints a
// new random token (128 characters of [A-Za-z0-9_-]) on every call, valid
// for the lifetime (WithLifetime, default 7200 s). The app's previous
// classic token keeps working for the grace period (WithGrace, default 5
// minutes) after the new one is minted; after that a business call with it
// gets 40001. A token past its own expiry gets 42001, which wins over
// 40001. Refusals are HTTP 200 with {"errcode":N,"errmsg":"..."}: 40002
// bad grant_type, 41002 missing appid, 41004 missing secret, 40013 unknown
// appid, 40125 wrong secret, 45009 daily quota exhausted, 43001 not a GET.
// Every call that passes the credential checks counts against the app's
// daily quota (WithDailyQuota, default 2000), which resets at midnight
// Beijing time (wechat.QuotaDay) by the fake's clock, or by ResetQuota /
// POST /cgi-bin/clear_quota.
//
// POST /cgi-bin/stable_token with a JSON body returns the app's current
// stable token while more than the grace period remains of its life; in
// its last grace window a call gets the next token (the old one keeps
// working until its own expiry), so expires_in counts down. force_refresh
// mints a new token and gives the old one the grace period; it is limited
// to 20 a Beijing day (then 45009) and 30 s apart (a sooner forced call is
// answered like a normal one). A GET gets 43002, a body that is not the
// expected JSON 47001. Stable and classic tokens are independent: minting
// one never affects the other.
//
// Business APIs check the token like WeChat does: GET
// /cgi-bin/get_api_domain_ip?access_token= answers {"ip_list":[...]},
// GET /cgi-bin/ticket/getticket?access_token=&type=jsapi|wx_card a ticket
// (bad type 40097); a missing token gets 41001, a token the fake never
// minted 40014, superseded 40001, expired 42001.
//
// Tickets: each app has its own jsapi and wx_card tickets, valid for the
// ticket lifetime (WithTicketLifetime, default 7200 s); expires_in always
// says the whole lifetime. A call while the ticket is valid either returns
// the same ticket (TicketReuse, the default) or mints a new one whose
// predecessor keeps working for the ticket grace (TicketRotate,
// WithTicketGrace), or returns the same ticket with its life renewed from
// that call (TicketRenew): WithTicketRefetch picks. TicketsMinted counts per app
// and kind. VerifyJSSDK and VerifyCard (and GET PathVerifyJSSDK) check a
// signature against the app's tickets the way wx.config does, and tell a
// signature made with a dead ticket (ErrDeadTicketSignature, counted in
// Stats.SignaturesDead) from one that matches nothing.
//
// No errmsg ever contains anything the caller sent, so a secret never
// echoes back. Every errmsg ends in a random " rid: ..." as WeChat's do:
// decide by errcode, never by errmsg.
//
// Faults (InjectFault) are queued and consumed, oldest first, by the next
// token-endpoint calls they match: errcode -1, latency, an HTML 502 from a
// proxy, a truncated JSON body, an empty token, a lost reply (the token is
// minted and the previous one invalidated, then the connection closes with
// no answer), any raw reply or errcode.
//
// Note for client authors: Go's http.Transport silently retries a GET
// whose reused keep-alive connection closes before any reply. A classic
// fetch hit by FaultLostReply on such a connection is therefore sent twice
// and mints twice; the fake's Stats show it.
//
// # What it does not model
//
// IP whitelists (40164) and IP confirmation (89501...), the per-minute
// limits (45011), the stable endpoint's own 10,000/minute and 500,000/day
// limits (stable calls do not count against the classic daily quota),
// clear_quota's 10 resets a month, frozen accounts or secrets, WeCom and
// other APIs, and any business API beyond the two above. Tokens are not
// tied to the caller's IP. Nothing persists across a restart.
//
// # Using it in your tests
//
// Drive time with WithClock and a clock you advance; the fake needs no
// real timers (only FaultLatency waits on the wall clock, and stops when
// the client hangs up or the fake closes). Assert on Stats (how many
// tokens were minted, how many business calls were refused and why),
// TokenState and CurrentToken: a cache that let two instances fetch at
// once shows Minted == 2; one that kept a replaced token shows
// BusinessSuperseded > 0 once the grace period is over.
package wechattest
