package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// serveBusiness relays a business call carrying ?access_token=T.
func (g *Gateway) serveBusiness(w http.ResponseWriter, r *http.Request, ex *exchange) {
	held, ok := g.recognise(w, r, ex)
	if !ok {
		return
	}
	g.relay(w, r, ex, held.App, held.StoodFor, r.URL.Path, r.URL.RawPath)
}

// recognise returns what the caller's ?access_token was handed out as, if
// the gateway still honours it and the credential it was handed out to is
// still in force (allowed this app); otherwise it answers 41001 (no token)
// or 40001 (the SDK fetches again and retries).
func (g *Gateway) recognise(w http.ResponseWriter, r *http.Request, ex *exchange) (HandedOut, bool) {
	t, ok := queryToken(r.URL.RawQuery)
	if !ok {
		g.fail(w, ex, 41001, "no_token", "access_token missing")
		return HandedOut{}, false
	}
	ex.token = t
	var held HandedOut
	found := false
	if len(t) <= wechat.MaxTokenBytes && strings.HasPrefix(t, handlePrefix) {
		var err error
		held, found, err = g.known.lookup(r.Context(), t, g.now())
		if err != nil {
			g.log.Warn("gateway: could not read the shared record of handed-out tokens", "token", wechat.Fingerprint(t), "err", err)
		}
	}
	if !found || g.apps[held.App] == nil {
		g.fail(w, ex, 40001, "unknown_token", "invalid credential, access_token is invalid or not latest: not a token this gateway handed out (fetch one through the gateway)")
		return HandedOut{}, false
	}
	ex.app, ex.cred = held.App, held.Credential
	if g.credentialNamed(held.Credential, held.App) == nil {
		g.fail(w, ex, 40001, "revoked_credential", "invalid credential, access_token is invalid or not latest: the gateway credential it was handed out to is revoked")
		return HandedOut{}, false
	}
	return held, true
}

// serveBearer is /apps/{appid}/<API path> with Authorization: Bearer.
func (g *Gateway) serveBearer(w http.ResponseWriter, r *http.Request, ex *exchange) {
	rest := strings.TrimPrefix(r.URL.Path, appsPrefix)
	appID, sub, _ := strings.Cut(rest, "/")
	sub = "/" + sub
	if t := strings.TrimSuffix(sub, "/"); !g.isAPIPath(sub) || t == pathToken || t == pathStableToken {
		g.fail(w, ex, 40066, "unknown_path", "invalid url: want /apps/{appid}/<WeChat API path>")
		return
	}
	app := g.apps[appID]
	if app == nil {
		g.fail(w, ex, 40013, "unknown_appid", "invalid appid")
		return
	}
	ex.app = app.id
	auth := r.Header.Get("Authorization")
	key, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok || key == "" {
		g.fail(w, ex, 41004, "no_credential", "missing Authorization: Bearer <gateway credential>")
		return
	}
	c := g.credentialByKey(key)
	if c == nil || !c.allows(app.id) {
		g.fail(w, ex, 40125, "bad_credential", "invalid credential: not a gateway credential allowed for this appid")
		return
	}
	ex.cred = c.name
	rawSub := ""
	if r.URL.RawPath != "" {
		if i := strings.Index(r.URL.RawPath, "/"+appID+"/"); i >= 0 {
			rawSub = r.URL.RawPath[i+len(appID)+1:]
		}
	}
	g.relay(w, r, ex, app.id, "", sub, rawSub)
}

// serveTicket answers getticket from the ticket cache.
func (g *Gateway) serveTicket(w http.ResponseWriter, r *http.Request, ex *exchange) {
	held, ok := g.recognise(w, r, ex)
	if !ok {
		return
	}
	app := held.App
	kind := r.URL.Query().Get("type")
	if kind != "jsapi" && kind != "wx_card" {
		g.fail(w, ex, 40097, "bad_type", "invalid args: type must be jsapi or wx_card")
		return
	}
	tk, err := g.tickets.Ticket(r.Context(), app, kind)
	if err != nil {
		g.tokenFailure(w, ex, err)
		return
	}
	secs := int64(tk.ExpiresIn(g.now()).Seconds())
	if secs < 1 {
		secs = 1
	}
	ex.errcode, ex.coded = 0, true
	writeJSON(w, `{"errcode":0,"errmsg":"ok","ticket":`+strconv.Quote(tk.Value)+`,"expires_in":`+strconv.FormatInt(secs, 10)+`}`)
}

// body is a request body as the relay holds it: buffered (it can be sent
// again) or streamed (once).
type body struct {
	buf      []byte
	stream   io.Reader // nil when buffered
	length   int64     // -1 unknown
	buffered bool
}

func (b *body) reader() io.ReadCloser {
	if b.buffered {
		if len(b.buf) == 0 {
			return http.NoBody
		}
		return io.NopCloser(bytes.NewReader(b.buf))
	}
	return io.NopCloser(b.stream)
}

// readBody buffers up to RetryBuffer bytes of r's body; a larger body is
// streamed (what was read first, then the rest). The whole body is capped
// at MaxBody.
func (g *Gateway) readBody(w http.ResponseWriter, r *http.Request) (body, error) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return body{buffered: true, length: 0}, nil
	}
	if r.ContentLength > g.maxBody {
		return body{}, &http.MaxBytesError{Limit: g.maxBody}
	}
	src := http.MaxBytesReader(w, r.Body, g.maxBody)
	if r.ContentLength > g.retryBuffer {
		return body{stream: src, length: r.ContentLength}, nil
	}
	var buf []byte
	if r.ContentLength > 0 {
		buf = make([]byte, 0, r.ContentLength+1)
	}
	bb := bytes.NewBuffer(buf)
	n, err := bb.ReadFrom(io.LimitReader(src, g.retryBuffer+1))
	if err != nil {
		return body{}, err
	}
	if n <= g.retryBuffer {
		return body{buf: bb.Bytes(), length: n, buffered: true}, nil
	}
	return body{stream: io.MultiReader(bb, src), length: r.ContentLength}, nil
}

// relay sends the request upstream for app with its current token (in
// place of the caller's, which stood for the WeChat token of fingerprint
// callers; "" for a Bearer call, which sends none) and copies the reply
// back;
// on 40001/40014/42001 it reports the token and, with a buffered body,
// sends once more with the replacement.
func (g *Gateway) relay(w http.ResponseWriter, r *http.Request, ex *exchange, app, callers, path, rawPath string) {
	ctx := r.Context()
	tok, err := g.tokens.Token(ctx, app)
	if err != nil {
		g.tokenFailure(w, ex, err)
		return
	}
	if callers != "" && callers != wechat.Fingerprint(tok.Value) {
		g.metrics.staleReplaced()
	}
	b, err := g.readBody(w, r)
	if err != nil {
		g.bodyFailure(w, ex, err)
		return
	}
	if !b.buffered {
		w.Header().Set(HeaderRetry, "disabled: request body over "+strconv.FormatInt(g.retryBuffer, 10)+" bytes (gateway.retry_buffer) was streamed")
	}
	resp, err := g.send(ctx, r, path, rawPath, tok.Value, &b)
	if err != nil {
		g.upstreamFailure(w, ex, err, tok.Value)
		return
	}
	code, refused, read, held := inspect(path, resp)
	ex.errcode, ex.coded = code, read
	if refused {
		var fresh tokencache.Token
		fresh, err = g.tokens.Invalidate(ctx, app, tok.Value)
		switch {
		case err != nil:
			ex.retry, ex.err = RetryReportFailed, err
		case fresh.Value == tok.Value:
			ex.retry = RetryNoReplace
		case !b.buffered:
			ex.retry = RetryStreamed
		default:
			resp.Body.Close()
			ex.retry = RetryDone
			resp, err = g.send(ctx, r, path, rawPath, fresh.Value, &b)
			if err != nil {
				g.upstreamFailure(w, ex, err, fresh.Value)
				return
			}
			code, _, read, held = inspect(path, resp)
			ex.errcode, ex.coded = code, read
			w.Header().Set(HeaderRetry, "retried once with a new token after errcode 40001/40014/42001")
		}
	}
	defer resp.Body.Close()
	copyHeader(w.Header(), resp.Header)
	w.WriteHeader(resp.StatusCode)
	if held != nil {
		_, err = w.Write(held)
	} else {
		buf := copyBuffers.Get().(*[]byte)
		_, err = io.CopyBuffer(w, resp.Body, *buf)
		copyBuffers.Put(buf)
	}
	if err != nil && ex.err == nil {
		ex.err = fmt.Errorf("copying the reply: %s", scrub(err.Error(), tok.Value))
	}
}

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// send makes one upstream request: the caller's method, path and query
// (access_token replaced by token) and end-to-end headers, to the
// configured upstream only.
func (g *Gateway) send(ctx context.Context, r *http.Request, path, rawPath, token string, b *body) (*http.Response, error) {
	u := *g.upstream
	u.Path = g.upstream.Path + path
	if rawPath != "" {
		u.RawPath = g.upstream.Path + rawPath
	}
	u.RawQuery = withToken(r.URL.RawQuery, token)
	out := http.Request{ // not escaping: WithContext below copies it
		Method:        r.Method,
		URL:           &u,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        make(http.Header, len(r.Header)),
		Body:          b.reader(),
		ContentLength: b.length,
		Host:          u.Host,
	}
	if b.buffered {
		out.ContentLength = int64(len(b.buf))
	}
	// The caller's Bearer credential stays here; without Accept-Encoding
	// the reply comes uncompressed, so it can be read for its errcode.
	copyHeader(out.Header, r.Header, "Authorization", "Accept-Encoding")
	return g.transport.RoundTrip(out.WithContext(ctx))
}

// inspect reads a JSON reply of bounded size for its errcode and reports
// whether WeChat refused the token. held is the body when it was read to
// its end (resp.Body is then empty); otherwise resp.Body still gives the
// whole body. Larger or non-JSON replies (media) are not read.
func inspect(path string, resp *http.Response) (code int, refused, read bool, held []byte) {
	if resp.StatusCode != http.StatusOK || resp.ContentLength > wechat.MaxReplyBytes || !looksJSON(resp.Header.Get("Content-Type")) {
		return 0, false, false, nil
	}
	var data []byte
	var err error
	if resp.ContentLength >= 0 {
		data = make([]byte, resp.ContentLength)
		_, err = io.ReadFull(resp.Body, data)
	} else {
		data, err = io.ReadAll(io.LimitReader(resp.Body, wechat.MaxReplyBytes+1))
	}
	if err != nil || len(data) > wechat.MaxReplyBytes {
		// Give the caller what came, then the rest or the same error.
		rest := resp.Body
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(data), &errOr{r: rest, err: err}), rest}
		return 0, false, false, nil
	}
	resp.Body.Close() // read to its end: the connection goes back to the pool
	// data (never nil: make and io.ReadAll both give a slice) holds it now.
	resp.Body = http.NoBody
	if !bytes.Contains(data, []byte(`"errcode"`)) {
		return 0, false, true, data // most successful replies carry no errcode: skip the decode
	}
	var apiErr *wechat.Error
	switch e := wechat.CheckBusinessReply(path, data); {
	case errors.As(e, &apiErr):
		return apiErr.Code, errors.Is(e, wechat.ErrTokenInvalid), true, data
	case e != nil:
		return 0, false, false, data // not a WeChat reply
	}
	return 0, false, true, data
}

// errOr reads r, or fails with err if reading the start already failed.
type errOr struct {
	r   io.Reader
	err error
}

func (e *errOr) Read(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	return e.r.Read(p)
}

func looksJSON(ct string) bool {
	return ct == "" || strings.Contains(ct, "json") || strings.HasPrefix(ct, "text/plain")
}

func (g *Gateway) bodyFailure(w http.ResponseWriter, ex *exchange, err error) {
	var mb *http.MaxBytesError
	if errors.As(err, &mb) {
		g.fail(w, ex, 45001, "body_too_large", fmt.Sprintf("request body over %d bytes (gateway.max_body)", g.maxBody))
		return
	}
	if errors.Is(err, context.DeadlineExceeded) {
		g.fail(w, ex, -1, "timeout", fmt.Sprintf("system busy: request not done within %v (gateway.timeout)", g.timeout))
		return
	}
	ex.err = err
	g.fail(w, ex, 44002, "bad_body", "empty post data: the request body could not be read")
}

// upstreamFailure answers when no reply came from upstream. The error
// text may hold the URL, so the token is scrubbed from what is logged.
func (g *Gateway) upstreamFailure(w http.ResponseWriter, ex *exchange, err error, token string) {
	var mb *http.MaxBytesError
	switch {
	case errors.As(err, &mb):
		g.fail(w, ex, 45001, "body_too_large", fmt.Sprintf("request body over %d bytes (gateway.max_body)", g.maxBody))
	case errors.Is(err, context.DeadlineExceeded):
		g.fail(w, ex, -1, "timeout", fmt.Sprintf("system busy: upstream did not answer within %v (gateway.timeout)", g.timeout))
	default:
		ex.err = errors.New(scrub(err.Error(), token))
		g.fail(w, ex, -1, "upstream_unreachable", "system busy: upstream unreachable")
	}
}

func scrub(s, secret string) string {
	if secret == "" {
		return s
	}
	s = strings.ReplaceAll(s, secret, "[redacted]")
	return strings.ReplaceAll(s, url.QueryEscape(secret), "[redacted]")
}

// queryToken returns the first access_token in a raw query.
func queryToken(raw string) (string, bool) {
	for raw != "" {
		var part string
		part, raw, _ = strings.Cut(raw, "&")
		if k, v, _ := strings.Cut(part, "="); paramIs(k, "access_token") {
			if !strings.ContainsAny(v, "%+") {
				return v, v != "" // what QueryUnescape would give, without its byte-by-byte scan
			}
			t, err := url.QueryUnescape(v)
			return t, err == nil && t != ""
		}
	}
	return "", false
}

// paramIs reports whether the raw query key k is name, as WeChat would
// decode it (access%5Ftoken is access_token too).
func paramIs(k, name string) bool {
	if k == name {
		return true
	}
	if !strings.ContainsAny(k, "%+") {
		return false
	}
	d, err := url.QueryUnescape(k)
	return err == nil && d == name
}

// withToken is raw with every access_token dropped and token appended;
// the other parameters keep their bytes and order.
func withToken(raw, token string) string { return withParam(raw, "access_token", token) }

// hopHeaders are the hop-by-hop headers (RFC 9110 7.6.1), never forwarded.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// copyHeader copies src's end-to-end headers into dst, except those named
// in drop (canonical names).
func copyHeader(dst, src http.Header, drop ...string) {
	var named []string // listed in Connection: hop-by-hop too
	for _, v := range src["Connection"] {
		for _, f := range strings.Split(v, ",") {
			if f = textproto.TrimString(f); f != "" {
				named = append(named, http.CanonicalHeaderKey(f))
			}
		}
	}
next:
	for k, vv := range src {
		for _, h := range hopHeaders {
			if k == h {
				continue next
			}
		}
		for _, h := range named {
			if k == h {
				continue next
			}
		}
		for _, h := range drop {
			if k == h {
				continue next
			}
		}
		if old, ok := dst[k]; ok {
			dst[k] = append(old, vv...)
		} else {
			dst[k] = vv // shared, never modified: src is not used again
		}
	}
}
