package tokencache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"

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

// Transport is an http.RoundTripper for WeChat APIs: it adds the app's
// access_token to every request and, when WeChat answers that the token is
// no longer valid (40001, 40014, 42001), reports exactly that token and
// sends the request once more with the replacement. A request whose body
// cannot be sent twice (no GetBody) is not retried.
type Transport struct {
	Source TokenSource
	// Base sends the requests; nil means http.DefaultTransport.
	Base http.RoundTripper
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	tok, err := t.Source.Token(ctx)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	resp, err := t.send(req, tok.Value)
	if err != nil {
		return nil, err
	}
	refused, err := inspect(req.URL.Path, resp)
	if err != nil || !refused {
		return resp, err
	}
	// Report the dead token even when this request cannot be retried, so
	// the next one goes out with a live token.
	fresh, ierr := t.Source.Invalidate(ctx, tok.Value)
	if ierr != nil || fresh.Value == tok.Value || req.Body != nil && req.GetBody == nil {
		return resp, nil
	}
	retry := req.Clone(ctx)
	if req.GetBody != nil {
		if retry.Body, err = req.GetBody(); err != nil {
			return nil, err
		}
	}
	return t.send(retry, fresh.Value)
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

// inspect reads a JSON reply of bounded size and reports whether WeChat
// refused its token. The body is put back for the caller.
func inspect(path string, resp *http.Response) (tokenRefused bool, err error) {
	if resp.ContentLength > maxInspectedReply || !looksJSON(resp.Header.Get("Content-Type")) {
		return false, nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxInspectedReply+1))
	if err != nil {
		resp.Body.Close()
		return false, err
	}
	if len(body) > maxInspectedReply {
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(body), resp.Body), resp.Body}
		return false, nil
	}
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return errors.Is(wechat.CheckBusinessReply(path, body), wechat.ErrTokenInvalid), nil
}

// looksJSON: WeChat labels JSON replies application/json or text/plain.
func looksJSON(contentType string) bool {
	return contentType == "" || strings.Contains(contentType, "json") || strings.HasPrefix(contentType, "text/plain")
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}
