package wechat_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	testAppID = "wx0123456789abcdef"
	// Characters that a URL query escapes, so redaction of the escaped form
	// is exercised too.
	testSecret wechat.Secret = "S3cr3t/Key+0123456789abcdef=="
)

// replyWith returns a handler that answers every request with status and body.
func replyWith(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

func newServer(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h) // listens on 127.0.0.1
	t.Cleanup(srv.Close)
	return srv
}

// fetchFunc is ClassicToken or StableToken(force=false) behind one signature,
// so tests run every case on both endpoints.
type fetchFunc struct {
	endpoint string
	fetch    func(c *wechat.Client, ctx context.Context, appID string, secret wechat.Secret) (wechat.Token, error)
}

var endpoints = []fetchFunc{
	{wechat.EndpointToken, func(c *wechat.Client, ctx context.Context, id string, s wechat.Secret) (wechat.Token, error) {
		return c.ClassicToken(ctx, id, s)
	}},
	{wechat.EndpointStableToken, func(c *wechat.Client, ctx context.Context, id string, s wechat.Secret) (wechat.Token, error) {
		return c.StableToken(ctx, id, s, false)
	}},
}

func TestClassicTokenRequest(t *testing.T) {
	var clockCalls atomic.Int32
	var got *http.Request
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if clockCalls.Load() != 1 {
			t.Errorf("clock read %d times before the request arrived, want 1", clockCalls.Load())
		}
		got = r.Clone(context.Background())
		w.Header().Set("Date", "Fri, 20 Nov 2026 12:00:01 GMT") // WeChat's clock
		replyWith(200, `{"access_token":"CLASSIC_TOKEN","expires_in":7200}`)(w, r)
	}))
	clock := func() time.Time { clockCalls.Add(1); return t0 }
	c := wechat.NewClient(wechat.WithBaseURL(srv.URL+"/"), wechat.WithClock(clock))

	tok, err := c.ClassicToken(context.Background(), testAppID, testSecret)
	if err != nil {
		t.Fatal(err)
	}
	if want := (wechat.Token{Value: "CLASSIC_TOKEN", ExpiresIn: 2 * time.Hour, FetchedAt: t0, IssuedAt: t0.Add(time.Second)}); !tok.IssuedAt.Equal(want.IssuedAt) || tok.Value != want.Value || tok.ExpiresIn != want.ExpiresIn || !tok.FetchedAt.Equal(t0) {
		t.Fatalf("token = %v, want %v", tok, want)
	}
	if got.Method != http.MethodGet || got.URL.Path != "/cgi-bin/token" {
		t.Errorf("request = %s %s, want GET /cgi-bin/token", got.Method, got.URL.Path)
	}
	want := url.Values{"grant_type": {"client_credential"}, "appid": {testAppID}, "secret": {testSecret.Reveal()}}
	if q := got.URL.Query(); q.Encode() != want.Encode() {
		t.Errorf("query = %v, want grant_type, appid and the secret", q)
	}
	if clockCalls.Load() != 1 {
		t.Errorf("clock read %d times, want once (before sending)", clockCalls.Load())
	}
}

func TestStableTokenRequest(t *testing.T) {
	for _, force := range []bool{false, true} {
		t.Run(fmt.Sprint("force=", force), func(t *testing.T) {
			var body map[string]any
			var method, path, ctype string
			srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				method, path, ctype = r.Method, r.URL.Path, r.Header.Get("Content-Type")
				if r.URL.RawQuery != "" {
					t.Errorf("stable request has a query %q; the secret belongs in the body", r.URL.RawQuery)
				}
				if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
					t.Errorf("request body: %v", err)
				}
				w.Header()["Date"] = nil // no Date header: IssuedAt stays zero
				replyWith(200, `{"access_token":"STABLE_TOKEN","expires_in":300}`)(w, r)
			}))
			c := wechat.NewClient(wechat.WithBaseURL(srv.URL), wechat.WithClock(func() time.Time { return t0 }))
			tok, err := c.StableToken(context.Background(), testAppID, testSecret, force)
			if err != nil {
				t.Fatal(err)
			}
			if want := (wechat.Token{Value: "STABLE_TOKEN", ExpiresIn: 5 * time.Minute, FetchedAt: t0}); tok != want {
				t.Fatalf("token = %v, want %v", tok, want)
			}
			if method != http.MethodPost || path != "/cgi-bin/stable_token" || ctype != "application/json" {
				t.Errorf("request = %s %s (%s), want POST /cgi-bin/stable_token (application/json)", method, path, ctype)
			}
			want := map[string]any{"grant_type": "client_credential", "appid": testAppID, "secret": testSecret.Reveal(), "force_refresh": force}
			if fmt.Sprint(body) != fmt.Sprint(want) {
				t.Errorf("body = %v, want %v", body, want)
			}
		})
	}
}

func TestBaseURLWithPathPrefix(t *testing.T) {
	var path atomic.Value
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path.Store(r.URL.Path)
		replyWith(200, `{"access_token":"T","expires_in":7200}`)(w, r)
	}))
	c := wechat.NewClient(wechat.WithBaseURL(srv.URL + "/wechat-proxy/"))
	if _, err := c.ClassicToken(context.Background(), testAppID, testSecret); err != nil {
		t.Fatal(err)
	}
	if got := path.Load(); got != "/wechat-proxy/cgi-bin/token" {
		t.Errorf("path = %v, want /wechat-proxy/cgi-bin/token", got)
	}
}

func TestClientRejectsBadConfig(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		client  *wechat.Client
		appID   string
		secret  wechat.Secret
		reason  string
		wantApp bool
	}{
		{"bad scheme", wechat.NewClient(wechat.WithBaseURL("ftp://example.com")), testAppID, testSecret, "must use http or https", true},
		{"no host", wechat.NewClient(wechat.WithBaseURL("http://")), testAppID, testSecret, "has no host", true},
		{"query in base", wechat.NewClient(wechat.WithBaseURL("http://127.0.0.1:1/?x=1")), testAppID, testSecret, "must not carry a query", true},
		{"unparsable", wechat.NewClient(wechat.WithBaseURL("http://[::1")), testAppID, testSecret, "invalid base URL", true},
		{"empty appid", wechat.NewClient(), "", testSecret, "empty appid", false},
		{"empty secret", wechat.NewClient(), testAppID, "", "empty secret", true},
	} {
		for _, ep := range endpoints {
			_, err := ep.fetch(tc.client, ctx, tc.appID, tc.secret)
			var ce *wechat.ConfigError
			if !errors.As(err, &ce) || !errors.Is(err, wechat.ErrConfig) || !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("%s/%s: err = %v, want *ConfigError (ErrConfig) containing %q", tc.name, ep.endpoint, err, tc.reason)
			}
			if errors.Is(err, wechat.ErrTransient) {
				t.Errorf("%s: a config error must not be retried as transient", tc.name)
			}
		}
	}
}

func TestClientReadsAtMostLimit(t *testing.T) {
	// A server that would stream 8 MiB: the client must stop after
	// wechat.MaxReplyBytes+1 and report the size, not buffer everything.
	var written atomic.Int64
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		chunk := []byte(strings.Repeat(" ", 32<<10))
		for i := 0; i < 256; i++ {
			n, err := w.Write(chunk)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	}))
	for _, ep := range endpoints {
		_, err := ep.fetch(wechat.NewClient(wechat.WithBaseURL(srv.URL)), context.Background(), testAppID, testSecret)
		var re *wechat.ReplyError
		if !errors.As(err, &re) || !strings.Contains(re.Reason, "body exceeds 65536 bytes") {
			t.Errorf("%s: err = %v, want body too large", ep.endpoint, err)
		}
	}
}

func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// blockingServer accepts a request, signals arrived, then holds the reply
// until the client goes away or the test ends.
func blockingServer(t *testing.T) (srv *httptest.Server, arrived <-chan struct{}) {
	t.Helper()
	ch := make(chan struct{}, 16)
	release := make(chan struct{})
	srv = newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ch <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(func() { close(release) }) // runs before srv.Close, which waits for handlers
	return srv, ch
}

func checkRequestError(t *testing.T, err error, endpoint string, sent bool, cause error) {
	t.Helper()
	var re *wechat.RequestError
	if !errors.As(err, &re) {
		t.Fatalf("err = %v (%T), want *RequestError", err, err)
	}
	if re.Endpoint != endpoint || re.Sent != sent {
		t.Errorf("RequestError endpoint/sent = %q/%v, want %q/%v (%v)", re.Endpoint, re.Sent, endpoint, sent, err)
	}
	if !errors.Is(err, wechat.ErrTransient) {
		t.Errorf("errors.Is(ErrTransient) = false: %v", err)
	}
	if got := errors.Is(err, wechat.ErrOutcomeUnknown); got != sent {
		t.Errorf("errors.Is(ErrOutcomeUnknown) = %v, want %v", got, sent)
	}
	if errors.Is(err, wechat.ErrMalformedReply) || errors.Is(err, wechat.ErrConfig) || errors.Is(err, wechat.ErrQuota) {
		t.Errorf("RequestError matches a class it should not: %v", err)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		t.Errorf("error chain holds a *url.Error (it prints the URL): %v", err)
	}
	if cause != nil && !errors.Is(err, cause) {
		t.Errorf("errors.Is(err, %v) = false: %v", cause, err)
	}
}

func TestClientDialRefusedIsNotSent(t *testing.T) {
	c := wechat.NewClient(wechat.WithBaseURL("http://" + closedPort(t)))
	for _, ep := range endpoints {
		_, err := ep.fetch(c, context.Background(), testAppID, testSecret)
		checkRequestError(t, err, ep.endpoint, false, nil)
		var op *net.OpError
		if !errors.As(err, &op) || op.Op != "dial" {
			t.Errorf("cause = %v, want a dial *net.OpError", err)
		}
	}
}

func TestClientContextAlreadyCanceled(t *testing.T) {
	var hits atomic.Int32
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, ep := range endpoints {
		_, err := ep.fetch(wechat.NewClient(wechat.WithBaseURL(srv.URL)), ctx, testAppID, testSecret)
		checkRequestError(t, err, ep.endpoint, false, context.Canceled)
	}
	if hits.Load() != 0 {
		t.Errorf("server saw %d requests, want 0", hits.Load())
	}
}

func TestClientContextCanceledInFlight(t *testing.T) {
	srv, arrived := blockingServer(t)
	c := wechat.NewClient(wechat.WithBaseURL(srv.URL))
	for _, ep := range endpoints {
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-arrived:
			case <-time.After(5 * time.Second):
			}
			cancel()
		}()
		tok, err := ep.fetch(c, ctx, testAppID, testSecret)
		cancel()
		if tok != (wechat.Token{}) {
			t.Errorf("returned a token")
		}
		checkRequestError(t, err, ep.endpoint, true, context.Canceled)
	}
}

func TestClientContextDeadline(t *testing.T) {
	srv, _ := blockingServer(t)
	c := wechat.NewClient(wechat.WithBaseURL(srv.URL))
	for _, ep := range endpoints {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		_, err := ep.fetch(c, ctx, testAppID, testSecret)
		cancel()
		checkRequestError(t, err, ep.endpoint, true, context.DeadlineExceeded)
	}
}

func TestClientHTTPTimeout(t *testing.T) {
	srv, _ := blockingServer(t)
	hc := &http.Client{Timeout: 100 * time.Millisecond}
	c := wechat.NewClient(wechat.WithBaseURL(srv.URL), wechat.WithHTTPClient(hc))
	for _, ep := range endpoints {
		start := time.Now()
		_, err := ep.fetch(c, context.Background(), testAppID, testSecret)
		checkRequestError(t, err, ep.endpoint, true, nil)
		if !strings.Contains(err.Error(), "Client.Timeout") {
			t.Errorf("err = %v, want the client timeout named", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("took %v, the 100ms timeout was not applied", d)
		}
	}
	if hc.CheckRedirect != nil {
		t.Errorf("WithHTTPClient modified the caller's *http.Client")
	}
}

// hijackServer reads the request, then breaks the connection the way a lost
// reply looks: after writing partial (or no) response bytes.
func hijackServer(t *testing.T, partial string) *httptest.Server {
	return newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		buf.WriteString(partial)
		buf.Flush()
		conn.Close()
	}))
}

func TestClientLostReply(t *testing.T) {
	for name, partial := range map[string]string{
		"no reply":  "",
		"cut body":  "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"access_tok",
		"cut head":  "HTTP/1.1 200 OK\r\nContent-Le",
		"cut chunk": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"acc",
	} {
		srv := hijackServer(t, partial)
		for _, ep := range endpoints {
			// A fresh client per call: a retried request on a pooled
			// connection would be a different test.
			_, err := ep.fetch(wechat.NewClient(wechat.WithBaseURL(srv.URL)), context.Background(), testAppID, testSecret)
			t.Logf("%s %s: %v", name, ep.endpoint, err)
			checkRequestError(t, err, ep.endpoint, true, nil)
		}
	}
}

func TestClientDoesNotFollowRedirects(t *testing.T) {
	var elsewhere atomic.Int32
	other := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		replyWith(200, `{"access_token":"T","expires_in":7200}`)(w, r)
	}))
	for _, status := range []int{301, 302, 307, 308} {
		srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, other.URL+r.URL.RequestURI(), status)
		}))
		for _, ep := range endpoints {
			// Even a caller's client that follows redirects must not.
			c := wechat.NewClient(wechat.WithBaseURL(srv.URL), wechat.WithHTTPClient(&http.Client{}))
			_, err := ep.fetch(c, context.Background(), testAppID, testSecret)
			var re *wechat.ReplyError
			if !errors.As(err, &re) || re.Status != status {
				t.Errorf("%d %s: err = %v, want ReplyError with status %d", status, ep.endpoint, err, status)
			}
		}
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("the redirect target received %d requests (and the secret)", n)
	}
}

func TestClientConcurrentUse(t *testing.T) {
	var n atomic.Int32
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		replyWith(200, fmt.Sprintf(`{"access_token":"T%d","expires_in":7200}`, n.Add(1)))(w, r)
	}))
	c := wechat.NewClient(wechat.WithBaseURL(srv.URL))
	var wg sync.WaitGroup
	seen := make(chan string, 32)
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := endpoints[i%2].fetch(c, context.Background(), testAppID, testSecret)
			if err != nil {
				t.Error(err)
				return
			}
			seen <- tok.Value
		}()
	}
	wg.Wait()
	close(seen)
	distinct := map[string]bool{}
	for v := range seen {
		distinct[v] = true
	}
	if len(distinct) != 32 || n.Load() != 32 {
		t.Errorf("got %d distinct tokens from %d requests, want 32 and 32", len(distinct), n.Load())
	}
}

// A transport that reports no httptrace events cannot prove the request was
// not sent, so the failure must count as "outcome unknown".
func TestCustomTransportFailureCountsAsSent(t *testing.T) {
	var calls atomic.Int32
	rt := roundTripFunc(func(*http.Request) (*http.Response, error) {
		calls.Add(1)
		return nil, errors.New("custom transport failed")
	})
	c := wechat.NewClient(wechat.WithBaseURL("http://127.0.0.1:1"), wechat.WithHTTPClient(&http.Client{Transport: rt}))
	for _, ep := range endpoints {
		_, err := ep.fetch(c, context.Background(), testAppID, testSecret)
		checkRequestError(t, err, ep.endpoint, true, nil)
		if !strings.Contains(err.Error(), "custom transport failed") {
			t.Errorf("cause lost: %v", err)
		}
	}
	if calls.Load() != 2 {
		t.Errorf("transport called %d times, want 2", calls.Load())
	}
}
