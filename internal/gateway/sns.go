package gateway

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// serveSNS relays the login calls that carry the AppSecret themselves
// (/sns/oauth2/access_token, /sns/jscode2session): the caller's secret
// must be a gateway credential for the app (or the AppSecret, when
// accepted), and the real AppSecret is put in its place. The reply is read
// whole (it is small) and every trace of the secret removed from its body
// and headers before it goes back.
func (g *Gateway) serveSNS(w http.ResponseWriter, r *http.Request, ex *exchange) {
	if r.Method != http.MethodGet {
		g.fail(w, ex, 43001, "method", "require GET method")
		return
	}
	q := r.URL.Query()
	app, _, ok := g.authorize(w, ex, "", q.Get("appid"), q.Get("secret"), false)
	if !ok {
		return
	}
	if app.secret == "" {
		g.fail(w, ex, -1, "no_secret", "system error: the gateway holds no AppSecret for this appid")
		return
	}
	secret := app.secret.Reveal()
	u := *g.upstream
	u.Path = g.upstream.Path + r.URL.Path
	u.RawQuery = withParam(r.URL.RawQuery, "secret", secret)
	out := &http.Request{Method: http.MethodGet, URL: &u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: make(http.Header), Body: http.NoBody, Host: u.Host}
	out.Header.Set("Accept", "application/json")
	resp, err := g.transport.RoundTrip(out.WithContext(r.Context()))
	if err != nil {
		g.upstreamFailure(w, ex, errors.New(scrub(err.Error(), secret)), "")
		return
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, wechat.MaxReplyBytes+1))
	if err != nil || len(data) > wechat.MaxReplyBytes {
		ex.err = errors.New("reading the reply failed or it is over wechat.MaxReplyBytes")
		g.fail(w, ex, -1, "bad_reply", "system error: upstream reply unreadable")
		return
	}
	data = scrubBytes(data, secret)
	var apiErr *wechat.Error
	if e := wechat.CheckBusinessReply(r.URL.Path, data); errors.As(e, &apiErr) {
		ex.errcode, ex.coded = apiErr.Code, true
	} else if e == nil {
		ex.coded = true
	}
	h := w.Header()
	for k, vv := range resp.Header {
		if isHop(k) || k == "Content-Length" || k == "Content-Encoding" {
			continue
		}
		for _, v := range vv {
			if !strings.Contains(v, secret) && !strings.Contains(v, url.QueryEscape(secret)) {
				h.Add(k, v)
			}
		}
	}
	h.Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(data)
}

func isHop(k string) bool {
	for _, h := range hopHeaders {
		if k == h {
			return true
		}
	}
	return false
}

// scrubBytes removes secret, raw or query-escaped, from b.
func scrubBytes(b []byte, secret string) []byte {
	b = bytes.ReplaceAll(b, []byte(secret), []byte("[redacted]"))
	if q := url.QueryEscape(secret); q != secret {
		b = bytes.ReplaceAll(b, []byte(q), []byte("[redacted]"))
	}
	return b
}

// withParam is raw with every name parameter dropped and name=value
// appended.
func withParam(raw, name, value string) string {
	esc := url.QueryEscape(value)
	var b strings.Builder
	b.Grow(len(raw) + 1 + len(name) + 1 + len(esc)) // one allocation
	for raw != "" {
		var part string
		part, raw, _ = strings.Cut(raw, "&")
		if k, _, _ := strings.Cut(part, "="); part == "" || paramIs(k, name) {
			continue
		}
		b.WriteString(part)
		b.WriteByte('&')
	}
	b.WriteString(name)
	b.WriteByte('=')
	b.WriteString(esc)
	return b.String()
}
