package wechat_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

// secretForms are the ways the secret could be spelled in a leak.
var secretForms = []string{testSecret.Reveal(), url.QueryEscape(testSecret.Reveal())}

// assertNoSecret fails if any rendering of err, or of any error in its
// chain, contains the secret.
func assertNoSecret(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error; every case here must fail", what)
		return
	}
	renders := []string{err.Error(), fmt.Sprintf("%+v %#v", err, err), fmt.Sprintf("%v %s %q %x", err, err, err, err)}
	for e := errors.Unwrap(err); e != nil; e = errors.Unwrap(e) {
		renders = append(renders, e.Error(), fmt.Sprintf("%+v %#v", e, e))
	}
	for _, r := range renders {
		for _, s := range secretForms {
			if strings.Contains(r, s) {
				t.Errorf("%s: the secret leaks in %q", what, r)
			}
		}
	}
}

// roundTripFunc is a custom transport: it reports no httptrace events.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestSecretNeverInErrors(t *testing.T) {
	clock := &fakeClock{now: t0}
	fake, _ := newFake(t, clock)
	secret := testSecret.Reveal()

	var gotSecret atomic.Int32 // the upstream did receive it: the test is not vacuous
	echo := func(status int, body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			if strings.Contains(r.URL.RawQuery, url.QueryEscape(secret)) || strings.Contains(string(b), secret) {
				gotSecret.Add(1)
			}
			w.WriteHeader(status)
			io.WriteString(w, body)
		}
	}
	blocking, _ := blockingServer(t)

	type scenario struct {
		name   string
		client func() *wechat.Client
		ctx    func() (context.Context, context.CancelFunc)
		fault  *wechattest.Fault // injected into the fake before the call
	}
	bg := func() (context.Context, context.CancelFunc) { return context.Background(), func() {} }
	at := func(u string) func() *wechat.Client {
		return func() *wechat.Client { return newClientFor(t, u, clock) }
	}
	redirectLoop := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, r.URL.RequestURI(), http.StatusFound) // the Location carries the secret
	}))
	scenarios := []scenario{
		{name: "dial refused", client: at("http://" + closedPort(t)), ctx: bg},
		{name: "context deadline", client: at(blocking.URL), ctx: func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 50*time.Millisecond)
		}},
		{name: "context canceled before", client: at(blocking.URL), ctx: func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}},
		{name: "client timeout", ctx: bg, client: func() *wechat.Client {
			return wechat.NewClient(wechat.WithBaseURL(blocking.URL), wechat.WithHTTPClient(&http.Client{Timeout: 50 * time.Millisecond}))
		}},
		{name: "status 500 echoing secret", client: at(newServer(t, echo(500, "error for secret="+secret)).URL), ctx: bg},
		{name: "HTML echoing secret", client: at(newServer(t, echo(200, "<html>"+secret+"</html>")).URL), ctx: bg},
		{name: "truncated JSON echoing secret", client: at(newServer(t, echo(200, `{"errcode":40125,"errmsg":"`+secret)).URL), ctx: bg},
		{name: "errcode echoing raw secret", client: at(newServer(t, echo(200, `{"errcode":40125,"errmsg":"invalid appsecret `+secret+`"}`)).URL), ctx: bg},
		{name: "errcode echoing escaped secret", client: at(newServer(t, echo(200, `{"errcode":40001,"errmsg":"bad secret=`+url.QueryEscape(secret)+`"}`)).URL), ctx: bg},
		{name: "errcode echoing JSON-escaped secret", client: at(newServer(t, echo(200, `{"errcode":40125,"errmsg":"`+strings.ReplaceAll(secret, "/", `\/`)+`"}`)).URL), ctx: bg},
		{name: "token field holding the secret", client: at(newServer(t, echo(200, `{"access_token":"`+secret+` x","expires_in":7200}`)).URL), ctx: bg},
		{name: "redirect loop", client: at(redirectLoop.URL), ctx: bg},
		{name: "malformed header echoing secret", client: at(hijackServer(t, "HTTP/1.1 200 OK\r\nX"+secret+"\r\n\r\n").URL), ctx: bg},
		{name: "lost reply", client: at(hijackServer(t, "").URL), ctx: bg},
		{name: "transport error quoting the URL", ctx: bg, client: func() *wechat.Client {
			rt := roundTripFunc(func(r *http.Request) (*http.Response, error) {
				return nil, fmt.Errorf("proxy refused %s (body secret %s)", r.URL, secret)
			})
			return wechat.NewClient(wechat.WithBaseURL("http://127.0.0.1:1"), wechat.WithHTTPClient(&http.Client{Transport: rt}))
		}},
		{name: "fake: errcode echoing secret", client: at(fake.URL()), ctx: bg, fault: &wechattest.Fault{
			Kind: wechattest.FaultRaw, Body: `{"errcode":40125,"errmsg":"invalid appsecret ` + secret + ` rid: 1"}`}},
		{name: "fake: HTML 502", client: at(fake.URL()), ctx: bg, fault: &wechattest.Fault{Kind: wechattest.FaultHTML502}},
		{name: "fake: lost reply", client: at(fake.URL()), ctx: bg, fault: &wechattest.Fault{Kind: wechattest.FaultLostReply}},
		{name: "fake: truncated", client: at(fake.URL()), ctx: bg, fault: &wechattest.Fault{Kind: wechattest.FaultTruncatedJSON}},
		{name: "fake: busy", client: at(fake.URL()), ctx: bg, fault: &wechattest.Fault{Kind: wechattest.FaultBusy}},
		{name: "fake: wrong appid", client: at(fake.URL()), ctx: bg}, // fetched with another appid below
		{name: "bad base URL", client: func() *wechat.Client { return wechat.NewClient(wechat.WithBaseURL("ftp://x")) }, ctx: bg},
	}
	for _, sc := range scenarios {
		for _, ep := range endpoints {
			what := sc.name + " " + ep.endpoint
			if sc.fault != nil {
				fake.InjectFault(*sc.fault)
			}
			appID := testAppID
			if sc.name == "fake: wrong appid" {
				appID = "wx_other"
			}
			ctx, cancel := sc.ctx()
			tok, err := ep.fetch(sc.client(), ctx, appID, testSecret)
			cancel()
			if tok != (wechat.Token{}) {
				t.Errorf("%s: returned a token", what)
			}
			assertNoSecret(t, what, err)
			if strings.Contains(sc.name, "errcode echoing") {
				var we *wechat.Error
				if !errors.As(err, &we) || !strings.Contains(we.Message, "[redacted]") {
					t.Errorf("%s: err = %v, want an *Error whose Message shows [redacted]", what, err)
				}
			}
		}
	}
	if n := gotSecret.Load(); n < 12 {
		t.Errorf("the echoing servers saw the secret in only %d requests; the test is not exercising leaks", n)
	}
	if fake.PendingFaults() != 0 {
		t.Errorf("%d faults not consumed", fake.PendingFaults())
	}

	// Source and config errors that name the app.
	c := wechat.NewClient(wechat.WithBaseURL(fake.URL()))
	_, err := wechat.NewSource(c, wechat.App{ID: "a", Secret: testSecret}, wechat.App{ID: "a", Secret: testSecret})
	assertNoSecret(t, "duplicate appid", err)
	_, err = wechat.NewSource(c, wechat.App{ID: "a", Secret: testSecret, Mode: 7})
	assertNoSecret(t, "bad mode", err)
	_, err = c.ClassicToken(context.Background(), "", testSecret)
	assertNoSecret(t, "empty appid", err)
}

func TestSecretFormatting(t *testing.T) {
	s := wechat.Secret("hunter2-SECRET")
	app := wechat.App{ID: "wx1", Secret: s, Mode: wechat.Stable}
	// %p is absent: fmt handles it before consulting any method, so a
	// string type cannot hide from it (it prints %!p(wechat.Secret=...)).
	for _, f := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%t", "%10.3s"} {
		for _, arg := range []any{s, app, &app, []wechat.Secret{s}, map[string]wechat.Secret{"k": s}} {
			if out := fmt.Sprintf(f, arg); strings.Contains(out, "hunter2") || strings.Contains(out, fmt.Sprintf("%x", "hunter2")) {
				t.Errorf("Sprintf(%q, %T) = %q leaks the secret", f, arg, out)
			}
		}
	}
	if got := fmt.Sprintf("%#v", s); got != `"[redacted]"` {
		t.Errorf("%%#v = %s", got)
	}
	var buf strings.Builder
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "secret", s, "app", app)
	if strings.Contains(buf.String(), "hunter2") {
		t.Errorf("slog JSON leaks: %s", buf.String())
	}
	if s.Reveal() != "hunter2-SECRET" {
		t.Errorf("Reveal = %q", s.Reveal())
	}
}

func TestTokenFormattingShowsFingerprint(t *testing.T) {
	tok := wechat.Token{Value: "TOKEN-VALUE-123", ExpiresIn: time.Hour, FetchedAt: t0}
	fp := wechat.Fingerprint(tok.Value)
	for _, f := range []string{"%v", "%+v", "%#v", "%s", "%d"} {
		out := fmt.Sprintf(f, tok)
		if strings.Contains(out, "TOKEN-VALUE") || !strings.Contains(out, fp) {
			t.Errorf("Sprintf(%q, token) = %q, want the fingerprint %s and not the value", f, out, fp)
		}
	}
	for _, h := range []func(io.Writer) slog.Handler{
		func(w io.Writer) slog.Handler { return slog.NewJSONHandler(w, nil) },
		func(w io.Writer) slog.Handler { return slog.NewTextHandler(w, nil) },
	} {
		var buf strings.Builder
		slog.New(h(&buf)).Info("fetched", "token", tok)
		if strings.Contains(buf.String(), "TOKEN-VALUE") || !strings.Contains(buf.String(), fp) {
			t.Errorf("slog output %q, want the fingerprint and not the value", buf.String())
		}
	}
}
