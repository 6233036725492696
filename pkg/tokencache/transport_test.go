package tokencache_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/internal/tktest"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

func TestTransportAddsTokenAndRetriesOnceAfterInvalidation(t *testing.T) {
	clock := tktest.NewClock(time.Date(2026, 11, 20, 4, 0, 0, 0, time.UTC))
	fake := wechattest.New(t, wechattest.WithApp("wxt", "transport-secret-123"), wechattest.WithClock(clock.Now),
		wechattest.WithGrace(time.Minute))
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	src, err := wechat.NewSource(wechat.NewClient(wechat.WithBaseURL(fake.URL()), wechat.WithClock(clock.Now)),
		wechat.App{ID: "wxt", Secret: "transport-secret-123"})
	if err != nil {
		t.Fatal(err)
	}
	cache, err := tokencache.New(rdb, src, tokencache.WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cache.Close() })
	httpc := &http.Client{Transport: &tokencache.Transport{Source: cache.App("wxt"), BaseURL: fake.URL()}}

	get := func() (string, int) {
		resp, err := httpc.Get(fake.URL() + "/cgi-bin/get_api_domain_ip?x=1")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b), fake.Stats("wxt").Minted
	}
	if body, minted := get(); !strings.Contains(body, "ip_list") || minted != 1 {
		t.Fatalf("first call: %s, minted %d", body, minted)
	}
	// Someone outside the fleet fetches twice: our token dies after the grace.
	for i := 0; i < 2; i++ {
		if _, err := wechat.NewClient(wechat.WithBaseURL(fake.URL())).ClassicToken(context.Background(), "wxt", "transport-secret-123"); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(2 * time.Minute)
	m.FastForward(2 * time.Minute)
	// The caller sees a success: the transport reported the dead token,
	// got a new one (one fetch) and retried once.
	if body, minted := get(); !strings.Contains(body, "ip_list") || minted != 4 {
		t.Fatalf("after invalidation: %s, minted %d (want 4: ours, two outside, one refresh)", body, minted)
	}
	st := fake.Stats("wxt")
	if st.BusinessSuperseded != 1 || st.BusinessOK != 2 {
		t.Fatalf("business ok %d, 40001 %d; want 2 and 1", st.BusinessOK, st.BusinessSuperseded)
	}
	// A body that cannot be replayed is not retried: the caller gets
	// WeChat's answer intact, and the dead token is still reported so the
	// next request works.
	for i := 0; i < 2; i++ {
		if _, err := wechat.NewClient(wechat.WithBaseURL(fake.URL())).ClassicToken(context.Background(), "wxt", "transport-secret-123"); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(2 * time.Minute)
	m.FastForward(2 * time.Minute)
	req, _ := http.NewRequest(http.MethodGet, fake.URL()+"/cgi-bin/get_api_domain_ip", io.NopCloser(strings.NewReader("x")))
	resp, err := httpc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "40001") {
		t.Fatalf("non-replayable request: got %s, want WeChat's 40001 answer passed through", b)
	}
	if body, minted := get(); !strings.Contains(body, "ip_list") || minted != 7 {
		t.Fatalf("next call: %s, minted %d (want 7: the report fetched once)", body, minted)
	}
}

// staticSource hands out tokens[0], then the next one each time the current
// one is invalidated.
type staticSource struct {
	mu          sync.Mutex
	tokens      []string
	i           int
	invalidated []string
}

func (s *staticSource) Token(context.Context) (tokencache.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return tokencache.Token{Value: s.tokens[s.i], Version: int64(s.i + 1)}, nil
}

func (s *staticSource) Invalidate(_ context.Context, bad string) (tokencache.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.invalidated = append(s.invalidated, bad)
	if bad == s.tokens[s.i] && s.i+1 < len(s.tokens) {
		s.i++
	}
	return tokencache.Token{Value: s.tokens[s.i], Version: int64(s.i + 1)}, nil
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// failingBody yields some bytes, then fails; it records whether it was closed.
type failingBody struct {
	r      io.Reader
	err    error
	closed bool
}

func (b *failingBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		err = b.err
	}
	return n, err
}

func (b *failingBody) Close() error { b.closed = true; return nil }

// A reply whose body fails midway: a RoundTripper returns a response or an
// error, never both. Transport returns the response, its body giving the
// bytes that arrived and then the very error, as without the Transport.
func TestTransportReplyReadFailureGivesTheResponseAlone(t *testing.T) {
	boom := errors.New("connection reset midway")
	body := &failingBody{r: strings.NewReader(`{"errcode":0,"ip_li`), err: boom}
	tr := &tokencache.Transport{Source: &staticSource{tokens: []string{"tok-1"}},
		Base: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: body, Request: r}, nil
		})}
	req, _ := http.NewRequest(http.MethodGet, "https://api.weixin.qq.com/cgi-bin/get_api_domain_ip", nil)
	resp, err := tr.RoundTrip(req)
	if resp != nil && err != nil || resp == nil && err == nil {
		t.Fatalf("RoundTrip returned response %v and error %v: want exactly one", resp != nil, err)
	}
	if err != nil {
		t.Fatalf("RoundTrip: %v, want the response", err)
	}
	got, rerr := io.ReadAll(resp.Body)
	if string(got) != `{"errcode":0,"ip_li` || !errors.Is(rerr, boom) {
		t.Fatalf("body gave %q then %v; want the bytes that arrived, then %v", got, rerr, boom)
	}
	if err := resp.Body.Close(); err != nil || !body.closed {
		t.Fatalf("Close: %v, underlying body closed %v", err, body.closed)
	}
}

func TestTransportWithoutSourceIsAnError(t *testing.T) {
	body := &failingBody{r: strings.NewReader("x"), err: io.EOF}
	req, _ := http.NewRequest(http.MethodPost, "https://api.weixin.qq.com/cgi-bin/message/custom/send", body)
	var resp *http.Response
	var err error
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("RoundTrip panicked: %v", r)
			}
		}()
		resp, err = (&tokencache.Transport{}).RoundTrip(req)
	}()
	if resp != nil || err == nil || !strings.Contains(err.Error(), "Source") {
		t.Fatalf("got response %v, error %v; want an error about the missing Source", resp != nil, err)
	}
	if !body.closed {
		t.Error("the request body was not closed: a RoundTripper must close it, even on errors")
	}
}

// tokenRecorder is a loopback server that records the access_token of every
// request it gets and answers as WeChat does.
type tokenRecorder struct {
	*httptest.Server
	mu   sync.Mutex
	seen []string // the access_token parameter of each request, "" if none
}

func newTokenRecorder(t *testing.T, h http.HandlerFunc) *tokenRecorder {
	rec := &tokenRecorder{}
	rec.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.mu.Lock()
		rec.seen = append(rec.seen, r.URL.Query().Get("access_token"))
		rec.mu.Unlock()
		if h != nil {
			h(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ip_list":["127.0.0.1"]}`)
	}))
	t.Cleanup(rec.Close)
	return rec
}

func (r *tokenRecorder) requests() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.seen...)
}

// Tokens go to the configured WeChat host only: not to another host, not
// after a redirect to another host.
func TestTransportSendsTokensOnlyToItsHost(t *testing.T) {
	other := newTokenRecorder(t, nil)
	redirector := newTokenRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/cgi-bin/get_api_domain_ip?x=1", http.StatusFound)
	})
	src := &staticSource{tokens: []string{"tok-secret-1"}}

	// The default host is api.weixin.qq.com: a loopback server gets nothing.
	httpc := &http.Client{Transport: &tokencache.Transport{Source: src}}
	if resp, err := httpc.Get(redirector.URL + "/cgi-bin/get_api_domain_ip"); err == nil {
		resp.Body.Close()
		t.Errorf("default host: a request to %s was sent", redirector.URL)
	}
	if got := redirector.requests(); len(got) != 0 {
		t.Errorf("default host: the loopback server got %d requests (tokens %q), want none", len(got), got)
	}
	if got := other.requests(); len(got) != 0 {
		t.Errorf("default host: the second server got %d requests (tokens %q), want none", len(got), got)
	}

	// BaseURL names the redirector: it gets the token, and its redirect to
	// the second server fails without sending anything there.
	var events []tokencache.TransportEvent
	tr := &tokencache.Transport{Source: src, BaseURL: redirector.URL, Observe: func(e tokencache.TransportEvent) { events = append(events, e) }}
	httpc = &http.Client{Transport: tr}
	resp, err := httpc.Get(redirector.URL + "/cgi-bin/get_api_domain_ip")
	if err == nil {
		resp.Body.Close()
		t.Fatal("the redirect to another host was followed")
	}
	if !errors.Is(err, tokencache.ErrForeignHost) || strings.Contains(err.Error(), "tok-secret") {
		t.Errorf("redirect: error %v, want ErrForeignHost, without the token", err)
	}
	if got := redirector.requests(); len(got) != 1 || got[0] != "tok-secret-1" {
		t.Errorf("redirector got tokens %q, want one request with the token", got)
	}
	if got := other.requests(); len(got) != 0 {
		t.Errorf("redirect: the second server got %d requests (tokens %q), want none", len(got), got)
	}
	if len(events) != 2 || events[0].Err != nil || events[0].First.Status != http.StatusFound ||
		!errors.Is(events[1].Err, tokencache.ErrForeignHost) || events[1].First.Fingerprint != "" {
		t.Errorf("events %+v: want the redirect answered, then the refused request with no token sent", events)
	}

	// Nor directly, nor in clear text, nor on another port of the same host.
	// The request body is closed, as a RoundTripper must.
	for _, target := range []string{
		other.URL + "/cgi-bin/get_api_domain_ip",
		strings.Replace(redirector.URL, "http://", "https://", 1) + "/cgi-bin/get_api_domain_ip",
		strings.Replace(other.URL, "127.0.0.1", "localhost", 1) + "/cgi-bin/get_api_domain_ip",
	} {
		body := &failingBody{r: strings.NewReader("{}"), err: io.EOF}
		req, _ := http.NewRequest(http.MethodPost, target, body)
		resp, err := tr.RoundTrip(req)
		if resp != nil || !errors.Is(err, tokencache.ErrForeignHost) {
			t.Errorf("%s: response %v, error %v; want ErrForeignHost", target, resp != nil, err)
		}
		if !body.closed {
			t.Errorf("%s: request body not closed", target)
		}
	}
	// A Host header naming another host is refused too.
	req, _ := http.NewRequest(http.MethodGet, redirector.URL+"/cgi-bin/get_api_domain_ip", nil)
	req.Host = "evil.example"
	if _, err := tr.RoundTrip(req); !errors.Is(err, tokencache.ErrForeignHost) {
		t.Errorf("Host header evil.example: %v, want ErrForeignHost", err)
	}
	if got := other.requests(); len(got) != 0 {
		t.Errorf("the second server got %d requests (tokens %q), want none", len(got), got)
	}
	if got := redirector.requests(); len(got) != 1 {
		t.Errorf("redirector got %d requests, want only the first", len(got))
	}
	// The default port and the case of the host do not matter.
	tr = &tokencache.Transport{Source: src, Base: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("{}")), Request: r}, nil
	})}
	for _, target := range []string{"https://API.weixin.qq.com:443/cgi-bin/x", "HTTPS://api.weixin.qq.com/cgi-bin/x"} {
		req, _ := http.NewRequest(http.MethodGet, target, nil)
		if resp, err := tr.RoundTrip(req); err != nil {
			t.Errorf("%s: %v", target, err)
		} else {
			resp.Body.Close()
		}
	}
}

type failingSource struct{ err error }

func (s failingSource) Token(context.Context) (tokencache.Token, error) {
	return tokencache.Token{}, s.err
}
func (s failingSource) Invalidate(context.Context, string) (tokencache.Token, error) {
	return tokencache.Token{}, s.err
}

// Observe reports each call: the token sent (by fingerprint), WeChat's
// errcode, the invalidation, the retry and its outcome. That is what the
// chaos reader counts dead-token calls from.
func TestTransportObserve(t *testing.T) {
	wx := newTokenRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		tok := r.URL.Query().Get("access_token")
		switch {
		case r.URL.Path == "/text":
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, "not json")
		case strings.Contains(tok, "dead"):
			_, _ = io.WriteString(w, `{"errcode":40001,"errmsg":"invalid credential"}`)
		case strings.Contains(tok, "expired"):
			_, _ = io.WriteString(w, `{"errcode":42001,"errmsg":"access_token expired"}`)
		default:
			_, _ = io.WriteString(w, `{"ip_list":["127.0.0.1"]}`)
		}
	})
	observe := func(src tokencache.TokenSource, method, path string, body io.Reader) (tokencache.TransportEvent, string) {
		t.Helper()
		var events []tokencache.TransportEvent
		tr := &tokencache.Transport{Source: src, BaseURL: wx.URL, Observe: func(e tokencache.TransportEvent) { events = append(events, e) }}
		req, _ := http.NewRequest(method, wx.URL+path, body)
		var reply string
		if resp, err := tr.RoundTrip(req); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			reply = string(b)
		}
		if len(events) != 1 {
			t.Fatalf("%s %s: %d events, want 1", method, path, len(events))
		}
		for _, tok := range []string{"tok-live", "tok-dead", "tok-expired"} {
			if strings.Contains(fmt.Sprintf("%+v", events[0]), tok) {
				t.Errorf("event %+v holds a token value", events[0])
			}
		}
		return events[0], reply
	}
	fp := wechat.Fingerprint

	// A live token: one call, answered.
	e, _ := observe(&staticSource{tokens: []string{"tok-live-1"}}, "GET", "/cgi-bin/get_api_domain_ip", nil)
	if e.Path != "/cgi-bin/get_api_domain_ip" || e.First.Fingerprint != fp("tok-live-1") || e.First.Token.Version != 1 ||
		e.First.Status != 200 || e.First.Errcode != 0 || e.First.Refused || e.First.Sent.IsZero() || e.Invalidated || e.Retried || e.Err != nil {
		t.Errorf("live token: %+v", e)
	}
	// A dead token: refused (40001), invalidated, retried with the live one.
	src := &staticSource{tokens: []string{"tok-dead-1", "tok-live-2"}}
	e, reply := observe(src, "GET", "/cgi-bin/get_api_domain_ip", nil)
	if !strings.Contains(reply, "ip_list") || e.First.Fingerprint != fp("tok-dead-1") || e.First.Errcode != 40001 || !e.First.Refused ||
		!e.Invalidated || e.InvalidateErr != nil || !e.Retried || e.Retry.Fingerprint != fp("tok-live-2") || e.Retry.Token.Version != 2 ||
		e.Retry.Errcode != 0 || e.Retry.Refused || e.Retry.Status != 200 || e.Err != nil {
		t.Errorf("dead token, retried: reply %s, event %+v", reply, e)
	}
	// The replacement is dead too (42001): both calls are dead-token calls.
	e, reply = observe(&staticSource{tokens: []string{"tok-dead-1", "tok-expired-2"}}, "GET", "/cgi-bin/get_api_domain_ip", nil)
	if !strings.Contains(reply, "42001") || !e.First.Refused || !e.Retried || !e.Retry.Refused || e.Retry.Errcode != 42001 ||
		e.Retry.Fingerprint != fp("tok-expired-2") {
		t.Errorf("dead token, retry refused: reply %s, event %+v", reply, e)
	}
	// A body that cannot be sent twice: invalidated, not retried.
	e, reply = observe(&staticSource{tokens: []string{"tok-dead-1", "tok-live-2"}}, "POST", "/cgi-bin/message/custom/send",
		io.NopCloser(strings.NewReader("{}")))
	if !strings.Contains(reply, "40001") || !e.First.Refused || !e.Invalidated || e.Retried || e.Retry != (tokencache.TransportAttempt{}) {
		t.Errorf("non-replayable: reply %s, event %+v", reply, e)
	}
	// Invalidate gives the same token back: not retried.
	e, _ = observe(&staticSource{tokens: []string{"tok-dead-1"}}, "GET", "/cgi-bin/get_api_domain_ip", nil)
	if !e.Invalidated || e.Retried {
		t.Errorf("no replacement: %+v", e)
	}
	// A reply that is not WeChat's JSON has no errcode, and says why.
	e, _ = observe(&staticSource{tokens: []string{"tok-live-1"}}, "GET", "/text", nil)
	if e.First.Errcode != 0 || e.First.Refused || !errors.Is(e.First.Err, wechat.ErrMalformedReply) || e.Err != nil {
		t.Errorf("text reply: %+v", e)
	}
	// No token: nothing sent.
	boom := errors.New("redis down")
	before := len(wx.requests())
	e, _ = observe(failingSource{boom}, "GET", "/cgi-bin/get_api_domain_ip", nil)
	if !errors.Is(e.TokenErr, boom) || !errors.Is(e.Err, boom) || e.First != (tokencache.TransportAttempt{}) || len(wx.requests()) != before {
		t.Errorf("token error: %+v", e)
	}
}
