// Package wechat is a client for WeChat's access-token endpoints: the classic
// token (GET /cgi-bin/token, Client.ClassicToken) and the stable token (POST
// /cgi-bin/stable_token, Client.StableToken). A Source binds a Client to a
// fixed set of apps and fetches each one from the endpoint its Mode names;
// it is what a token cache calls. Client.Ticket fetches jsapi and wx_card
// tickets (GET /cgi-bin/ticket/getticket) with an access token, under the
// same reply rules (ParseTicketReply), the ticket read from "ticket".
//
// Every reply is validated before it is trusted (ParseTokenReply, fuzzed): a
// token comes back only when the HTTP status is 2xx, the body is at most
// MaxReplyBytes of one JSON object, errcode is absent or 0, access_token is
// 1 to MaxTokenBytes of printable ASCII without spaces, and expires_in is an
// integer in (0, 24 h]. Token.FetchedAt is read from the clock before the
// request is sent, so a slow reply never makes a token look younger.
//
// # Errors
//
// Errors returned by the upstream carry their errcode as *Error and are
// classified (ErrTransient, ErrQuota, ErrConfig, ErrTokenInvalid) so callers
// decide with errors.Is, never by reading errmsg. The same errcode can mean
// different things on different endpoints: 40001 from the token endpoint is a
// wrong secret (ErrConfig), from a business API it is a dead token
// (ErrTokenInvalid, see CheckBusinessReply).
//
// A failure without an errcode is one of:
//   - *ReplyError: a reply that is not valid (ErrMalformedReply). The request
//     reached WeChat, so it is also ErrOutcomeUnknown, and ErrTransient.
//   - *RequestError: no reply (network, timeout, cancelled context). Always
//     ErrTransient; ErrOutcomeUnknown unless the request certainly never left
//     (dial failed, context already done). A classic fetch whose outcome is
//     unknown may have minted a token and so invalidated the previous one.
//   - *ConfigError: bad arguments or configuration (ErrConfig); nothing sent.
//
// Go's http.Transport may resend a GET whose reused keep-alive connection
// closed without a reply, so a lost classic reply can mint twice; the token
// then returned is the one minted last, which is what a cache wants.
//
// # Secrets
//
// The AppSecret is sent to WeChat and nowhere else: errors carry endpoint
// paths, never URLs (Go's *url.Error would print the query with the secret,
// so only its cause is kept); errmsg is redacted; a ReplyError never quotes
// the body; redirects are not followed (they would carry the secret to
// another host) and are reported as a bad status. The Secret type formats as
// "[redacted]" with fmt, JSON and slog, and a Token formats and logs as its
// Fingerprint.
package wechat
