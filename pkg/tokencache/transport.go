package tokencache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// TokenSource hands out tokens for one app. It is the shape of
// golang.org/x/oauth2's TokenSource, with a context, plus the passive
// refresh. *AppTokens is one; implementations are safe for concurrent use.
type TokenSource interface {
	Token(ctx context.Context) (Token, error)
	// Invalidate reports that bad was refused by WeChat and returns the
	// token to use instead.
	Invalidate(ctx context.Context, bad string) (Token, error)
}

// AppTokens is the Cache seen from one app.
type AppTokens struct {
	cache *Cache
	appID string
}

// App returns the TokenSource for appID.
func (c *Cache) App(appID string) *AppTokens { return &AppTokens{cache: c, appID: appID} }

// Token implements TokenSource.
func (a *AppTokens) Token(ctx context.Context) (Token, error) { return a.cache.Token(ctx, a.appID) }

// Invalidate implements TokenSource.
func (a *AppTokens) Invalidate(ctx context.Context, bad string) (Token, error) {
	return a.cache.Invalidate(ctx, a.appID, bad)
}

// maxInspectedReply bounds how much of a reply Transport reads to look for
// an errcode. Larger replies (media downloads) pass through unread.
const maxInspectedReply = 1 << 20

// ErrForeignHost: Transport refused a request whose scheme or host is not
// its BaseURL's. Nothing was sent.
var ErrForeignHost = errors.New("tokencache: Transport sends access tokens only to its BaseURL's host")

// errNoSource: a Transport without a Source.
var errNoSource = errors.New("tokencache: Transport has no Source")

// Transport is an http.RoundTripper for WeChat APIs: it adds the app's
// access_token to every request and, when WeChat answers that the token is
// no longer valid (40001, 40014, 42001), reports exactly that token and
// sends the request once more with the replacement. A request whose body
// cannot be sent twice (no GetBody) is not retried.
//
// Tokens go only to BaseURL's scheme and host: a request for any other
// URL fails with ErrForeignHost before anything is sent. http.Client
// follows a redirect by calling RoundTrip again for the new URL, so a
// redirect to another host fails the same way rather than carry the token
// there; still, use a client that does not follow redirects, WeChat's APIs
// do not redirect:
//
//	&http.Client{Transport: t, CheckRedirect: func(*http.Request, []*http.Request) error {
//		return http.ErrUseLastResponse
//	}}
//
// The reply is read (up to 1 MiB of JSON) to look for the errcode and put
// back for the caller. If reading it fails, RoundTrip still returns the
// response alone: its body gives the bytes that arrived and then the read's
// error, as the response would have without Transport; such a reply is not
// retried.
type Transport struct {
	Source TokenSource
	// Base sends the requests; nil means http.DefaultTransport.
	Base http.RoundTripper
	// BaseURL is the only scheme and host (port included) the Transport
	// sends tokens to; its path is ignored. "" means wechat.DefaultBaseURL
	// (https://api.weixin.qq.com). Give a relay's or a test server's URL
	// here.
	BaseURL string
	// Observe, when not nil, is called once at the end of every RoundTrip
	// with what happened; see TransportEvent. It runs on the caller's
	// goroutine before RoundTrip returns, so it should be quick, and must be
	// safe for concurrent use if the Transport is. nil costs nothing.
	Observe func(TransportEvent)
}

// TransportEvent is one RoundTrip's outcome, for Transport.Observe. It holds
// no token value, only fingerprints, so it is safe to log.
//
// A dead-token call (one WeChat answered 40001, 40014 or 42001) is an
// attempt with Refused set: First, and Retry when Retried. Its Fingerprint
// and Token say which token it was.
type TransportEvent struct {
	// Path is the request's URL path (never the query, which holds the token).
	Path string
	// TokenErr is Source.Token's error: no request was sent.
	TokenErr error
	// First is the request as sent first (zero if none was sent).
	First TransportAttempt
	// Invalidated: WeChat refused First's token, which was reported with
	// Source.Invalidate. InvalidateErr is what that returned.
	Invalidated   bool
	InvalidateErr error
	// Retried: the request was sent once more, with the token Invalidate
	// returned; Retry says how that went. A request is not retried when
	// Invalidate failed or returned the refused token again, or when its
	// body cannot be sent twice.
	Retried bool
	Retry   TransportAttempt
	// Err is the error RoundTrip returned (ErrForeignHost, a Source error,
	// Base's error), nil when it returned a response.
	Err error
}

// TransportAttempt is one request Transport sent.
type TransportAttempt struct {
	// Fingerprint is wechat.Fingerprint of the token sent.
	Fingerprint string
	// Token is the token sent, with its Value removed.
	Token Token
	// Sent is when the request was handed to Base.
	Sent time.Time
	// Status is the HTTP status, 0 without a response.
	Status int
	// Errcode is WeChat's errcode, 0 for success or when the reply was not
	// read (not JSON, larger than 1 MiB, or Err).
	Errcode int
	// Refused: WeChat said the token is no longer valid (40001, 40014 or
	// 42001 from a business API): a call answered with a dead token.
	Refused bool
	// Err is Base's error, or why the reply gave no errcode: reading it
	// failed, or it is not a WeChat reply (matches wechat.ErrMalformedReply).
	Err error
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (resp *http.Response, err error) {
	var ev *TransportEvent
	if t.Observe != nil {
		ev = &TransportEvent{}
		if req.URL != nil {
			ev.Path = req.URL.Path
		}
		defer func() {
			ev.Err = err
			t.Observe(*ev)
		}()
	}
	if err := t.check(req); err != nil {
		closeBody(req)
		return nil, err
	}
	ctx := req.Context()
	tok, err := t.Source.Token(ctx)
	if err != nil {
		closeBody(req)
		if ev != nil {
			ev.TokenErr = err
		}
		return nil, err
	}
	resp, refused, err := t.attempt(req, tok, ev.first(), true)
	if err != nil || !refused {
		return resp, err
	}
	// Report the dead token even when this request cannot be retried, so
	// the next one goes out with a live token.
	fresh, ierr := t.Source.Invalidate(ctx, tok.Value)
	if ev != nil {
		ev.Invalidated, ev.InvalidateErr = true, ierr
	}
	if ierr != nil || fresh.Value == tok.Value || req.Body != nil && req.GetBody == nil {
		return resp, nil
	}
	retry := req.Clone(ctx)
	if req.GetBody != nil {
		if retry.Body, err = req.GetBody(); err != nil {
			resp.Body.Close()
			return nil, err
		}
	}
	if ev != nil {
		ev.Retried = true
	}
	// The retry's reply is the caller's: read it only for an observer.
	resp, _, err = t.attempt(retry, fresh, ev.retry(), ev != nil)
	return resp, err
}

// check refuses what RoundTrip must not send: no Source, or a URL outside
// BaseURL.
func (t *Transport) check(req *http.Request) error {
	if t.Source == nil {
		return errNoSource
	}
	base := t.BaseURL
	if base == "" {
		base = wechat.DefaultBaseURL
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("tokencache: Transport.BaseURL is not an http(s) URL") // it may hold credentials: not quoted
	}
	if req.URL == nil {
		return errors.New("tokencache: Transport: request without a URL")
	}
	scheme, host := strings.ToLower(u.Scheme), canonicalHost(u.Scheme, u.Host)
	if strings.ToLower(req.URL.Scheme) != scheme || canonicalHost(req.URL.Scheme, req.URL.Host) != host ||
		req.Host != "" && canonicalHost(req.URL.Scheme, req.Host) != host {
		// Scheme and host only: the URL's query may hold secrets.
		return fmt.Errorf("%w, %s://%s, not to %s://%s", ErrForeignHost, scheme, host,
			strings.ToLower(req.URL.Scheme), canonicalHost(req.URL.Scheme, req.URL.Host))
	}
	return nil
}

// canonicalHost lower-cases host and drops the scheme's default port.
func canonicalHost(scheme, host string) string {
	host = strings.ToLower(host)
	if h, port, err := net.SplitHostPort(host); err == nil &&
		(port == "443" && strings.EqualFold(scheme, "https") || port == "80" && strings.EqualFold(scheme, "http")) {
		if strings.Contains(h, ":") {
			return "[" + h + "]" // IPv6
		}
		return h
	}
	return host
}

// attempt sends req with tok and, if look, reads the reply for its errcode.
// a, when not nil, records the attempt.
func (t *Transport) attempt(req *http.Request, tok Token, a *TransportAttempt, look bool) (*http.Response, bool, error) {
	if a != nil {
		a.Fingerprint, a.Token, a.Sent = wechat.Fingerprint(tok.Value), tok, time.Now()
		a.Token.Value = ""
	}
	resp, err := t.send(req, tok.Value)
	if err != nil {
		if a != nil {
			a.Err = err
		}
		return nil, false, err
	}
	if !look {
		if a != nil {
			a.Status = resp.StatusCode
		}
		return resp, false, nil
	}
	code, refused, rerr := inspect(req.URL.Path, resp)
	if a != nil {
		a.Status, a.Errcode, a.Refused, a.Err = resp.StatusCode, code, refused, rerr
	}
	return resp, refused, nil
}

// send sends a copy of req with access_token set: a RoundTripper must not
// modify the caller's request.
func (t *Transport) send(req *http.Request, token string) (*http.Response, error) {
	out := req.Clone(req.Context())
	q := out.URL.Query()
	q.Set("access_token", token)
	out.URL.RawQuery = q.Encode()
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	return base.RoundTrip(out)
}

// inspect reads a JSON reply of bounded size for its errcode and reports
// whether WeChat refused its token. The body is put back for the caller; if
// reading it fails, the body gives what was read and then the same error.
// err says why there is no errcode (reading failed, or not a WeChat reply);
// it is not the caller's error.
func inspect(path string, resp *http.Response) (errcode int, tokenRefused bool, err error) {
	if resp.ContentLength > maxInspectedReply || !looksJSON(resp.Header.Get("Content-Type")) {
		return 0, false, nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxInspectedReply+1))
	if err != nil {
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(body), errReader{err}), resp.Body}
		return 0, false, err
	}
	if len(body) > maxInspectedReply {
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(body), resp.Body), resp.Body}
		return 0, false, nil
	}
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	err = wechat.CheckBusinessReply(path, body)
	var apiErr *wechat.Error
	if errors.As(err, &apiErr) {
		return apiErr.Code, errors.Is(err, wechat.ErrTokenInvalid), nil
	}
	return 0, false, err
}

// errReader fails every Read with err.
type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// looksJSON: WeChat labels JSON replies application/json or text/plain.
func looksJSON(contentType string) bool {
	return contentType == "" || strings.Contains(contentType, "json") || strings.HasPrefix(contentType, "text/plain")
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

func (e *TransportEvent) first() *TransportAttempt {
	if e == nil {
		return nil
	}
	return &e.First
}

func (e *TransportEvent) retry() *TransportAttempt {
	if e == nil {
		return nil
	}
	return &e.Retry
}
