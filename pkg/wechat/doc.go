// Package wechat is a client for WeChat's access-token endpoints: the classic
// token (GET /cgi-bin/token) and the stable token (POST /cgi-bin/stable_token).
//
// Every reply is validated before it is trusted: a token comes back only when
// the HTTP status, the body size, the JSON shape, the token's characters and
// length and expires_in are all sane. Anything else is a precise error.
//
// Errors returned by the upstream carry their errcode as *Error and are
// classified (ErrTransient, ErrQuota, ErrConfig, ErrTokenInvalid) so callers
// decide with errors.Is, never by reading errmsg. The same errcode can mean
// different things on different endpoints: 40001 from the token endpoint is a
// wrong secret (ErrConfig), from a business API it is a dead token
// (ErrTokenInvalid).
//
// The AppSecret is sent to WeChat and nowhere else: it never appears in an
// error string (Go's *url.Error would print it as part of the URL; this
// package redacts it), and the Secret type formats as "[redacted]".
package wechat
