package gateway

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/internal/testlog"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

const (
	app1      = "wx1"
	app2      = "wx2"
	secret1   = "real-app-secret-one-XYZ"
	secret2   = "real-app-secret-two-XYZ"
	credA     = "credential-of-team-a-0123456789" // allowed for wx1
	credB     = "credential-of-team-b-0123456789" // allowed for wx2
	credAll   = "credential-for-all-apps-98765"
	keyPrefix = "tk:"
)

// upstream is the fake WeChat behind the gateway, mounted with the few
// extra paths the tests need; it records every request that is not a
// token fetch or a token check.
type upstream struct {
	fake *wechattest.Server
	srv  *httptest.Server

	mu    sync.Mutex
	calls []upstreamCall

	block         chan struct{} // /cgi-bin/slow waits on it (or the caller leaving)
	arrived       chan struct{} // /cgi-bin/slow sends on it when a call arrives
	elsewhere     *httptest.Server
	elsewhereHits int
}

type upstreamCall struct {
	method, path, token string
	header              http.Header
	bodyLen             int
	host                string
}

// listenLoopback starts h on 127.0.0.1 only.
func listenLoopback(t testing.TB, h http.Handler) *httptest.Server {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &httptest.Server{Listener: l, Config: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func newUpstream(t testing.TB, opts ...wechattest.Option) *upstream {
	t.Helper()
	opts = append([]wechattest.Option{wechattest.WithApp(app1, secret1), wechattest.WithApp(app2, secret2)}, opts...)
	u := &upstream{fake: wechattest.NewHandler(opts...), block: make(chan struct{}), arrived: make(chan struct{}, 16)}
	t.Cleanup(u.fake.Close)
	fakeH := u.fake.Handler()
	// checkToken has the fake judge a token as a business call would, and
	// returns its refusal or nil.
	checkToken := func(r *http.Request) []byte {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, wechat.EndpointDomainIP+"?access_token="+url.QueryEscape(r.URL.Query().Get("access_token")), nil)
		fakeH.ServeHTTP(rec, req)
		var reply struct {
			Errcode int `json:"errcode"`
		}
		_ = json.Unmarshal(rec.Body.Bytes(), &reply)
		if reply.Errcode != 0 {
			return rec.Body.Bytes()
		}
		return nil
	}
	writeJSON := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	u.elsewhere = listenLoopback(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.elsewhereHits++
		u.mu.Unlock()
	}))
	mux := http.NewServeMux()
	mux.Handle("/", fakeH)
	// co-wechat-api's getIp: the fake's get_api_domain_ip under the name
	// the SDK uses, counted by the fake like any business call.
	mux.HandleFunc("/cgi-bin/getcallbackip", func(w http.ResponseWriter, r *http.Request) {
		r2 := r.Clone(r.Context())
		r2.URL.Path = wechat.EndpointDomainIP
		fakeH.ServeHTTP(w, r2)
	})
	// A media upload: the token is judged by the fake (and counted), the
	// size of what arrived is answered.
	mux.HandleFunc("/cgi-bin/media/upload", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		if refused := checkToken(r); refused != nil {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(refused)
			return
		}
		writeJSON(w, map[string]any{"errcode": 0, "size": n})
	})
	// A media download: a large binary reply.
	mux.HandleFunc("/cgi-bin/media/get", func(w http.ResponseWriter, r *http.Request) {
		if refused := checkToken(r); refused != nil {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(refused)
			return
		}
		n, _ := strconv.Atoi(r.URL.Query().Get("size"))
		w.Header().Set("Content-Type", "image/jpeg")
		w.Header().Set("Content-Length", strconv.Itoa(n))
		chunk := make([]byte, 64<<10)
		for i := range chunk {
			chunk[i] = byte(i)
		}
		for n > 0 {
			m := min(n, len(chunk))
			_, _ = w.Write(chunk[:m])
			n -= m
		}
	})
	mux.HandleFunc("/cgi-bin/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, u.elsewhere.URL+"/steal?"+r.URL.RawQuery, http.StatusFound)
	})
	mux.HandleFunc("/cgi-bin/slow", func(w http.ResponseWriter, r *http.Request) {
		u.arrived <- struct{}{}
		select {
		case <-u.block:
		case <-r.Context().Done():
		}
		writeJSON(w, map[string]any{"errcode": 0})
	})
	mux.HandleFunc("/cgi-bin/hop", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "X-Private")
		w.Header().Set("X-Private", "hop")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-End-To-End", "kept")
		writeJSON(w, map[string]any{"errcode": 0})
	})
	// The login calls: they check the real secret, and echo it back
	// everywhere, as a hostile or careless upstream might.
	sns := func(codeParam string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			q := r.URL.Query()
			want := map[string]string{app1: secret1, app2: secret2}[q.Get("appid")]
			w.Header().Set("X-Echo", "secret="+q.Get("secret"))
			w.Header().Set("Content-Type", "application/json")
			if want == "" || q.Get("secret") != want {
				writeJSON(w, map[string]any{"errcode": 40125, "errmsg": "invalid appsecret " + q.Get("secret")})
				return
			}
			if q.Get(codeParam) == "" {
				writeJSON(w, map[string]any{"errcode": 40029, "errmsg": "invalid code"})
				return
			}
			writeJSON(w, map[string]any{"openid": "o-" + q.Get(codeParam), "session_key": "sk", "debug": "you sent " + url.QueryEscape(q.Get("secret")) + " / " + q.Get("secret")})
		}
	}
	mux.HandleFunc("/sns/oauth2/access_token", sns("code"))
	mux.HandleFunc("/sns/jscode2session", sns("js_code"))
	u.srv = listenLoopback(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if p != wechat.EndpointToken && p != wechat.EndpointStableToken && r.Header.Get(wechat.CheckHeader) == "" {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(strings.NewReader(string(body)))
			u.mu.Lock()
			u.calls = append(u.calls, upstreamCall{method: r.Method, path: p, token: r.URL.Query().Get("access_token"),
				header: r.Header.Clone(), bodyLen: len(body), host: r.Host})
			u.mu.Unlock()
		}
		mux.ServeHTTP(w, r)
	}))
	return u
}

func (u *upstream) recorded() []upstreamCall {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]upstreamCall(nil), u.calls...)
}

func (u *upstream) hitsElsewhere() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.elsewhereHits
}

// replica is one process's cache and gateway.
type replica struct {
	cache *tokencache.Cache
	gw    *Gateway
	srv   *httptest.Server
	logs  *testlog.Buffer
}

type setup struct {
	t  testing.TB
	up *upstream
	mr *miniredis.Miniredis
}

func newSetup(t testing.TB, opts ...wechattest.Option) *setup {
	return &setup{t: t, up: newUpstream(t, opts...), mr: miniredis.RunT(t)}
}

func (s *setup) client() redis.UniversalClient {
	c := redis.NewClient(&redis.Options{Addr: s.mr.Addr()})
	s.t.Cleanup(func() { c.Close() })
	return c
}

// replica builds a cache and a gateway on the shared Redis; edit changes
// the gateway's Config before New.
func (s *setup) replica(edit func(*Config)) *replica {
	t := s.t
	t.Helper()
	client := s.client()
	src, err := wechat.NewSource(wechat.NewClient(wechat.WithBaseURL(s.up.srv.URL)),
		wechat.App{ID: app1, Secret: secret1}, wechat.App{ID: app2, Secret: secret2})
	if err != nil {
		t.Fatal(err)
	}
	logs := &testlog.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cache, err := tokencache.New(client, src, tokencache.WithKeyPrefix(keyPrefix), tokencache.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cache.Close() })
	cfg := Config{
		Tokens: cache,
		Apps:   []App{{ID: app1, Secret: secret1}, {ID: app2, Secret: secret2}},
		Credentials: []Credential{
			{Name: "team-a", Key: credA, Apps: []string{app1}},
			{Name: "team-b", Key: credB, Apps: []string{app2}},
			{Name: "ops", Key: credAll, Apps: []string{"*"}},
		},
		UpstreamURL: s.up.srv.URL,
		Ledger:      RedisLedger(client, keyPrefix),
		Logger:      log,
		AccessLog:   true,
	}
	if edit != nil {
		edit(&cfg)
	}
	gw, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &replica{cache: cache, gw: gw, srv: listenLoopback(t, gw), logs: logs}
}

// noFollow is a client that never follows redirects.
var noFollow = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 30 * time.Second}

type reply struct {
	status int
	header http.Header
	body   []byte
	fields map[string]any
}

func (r reply) errcode() int {
	if v, ok := r.fields["errcode"].(float64); ok {
		return int(v)
	}
	return 0
}

func (r reply) str(k string) string { s, _ := r.fields[k].(string); return s }

func do(t testing.TB, req *http.Request) reply {
	t.Helper()
	resp, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := reply{status: resp.StatusCode, header: resp.Header, body: b}
	_ = json.Unmarshal(b, &r.fields)
	return r
}

func get(t testing.TB, u string) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, req)
}

// token fetches a token through the gateway the way an SDK does.
func (rp *replica) token(t testing.TB, app, secret string) reply {
	t.Helper()
	return get(t, rp.srv.URL+"/cgi-bin/token?grant_type=client_credential&appid="+app+"&secret="+url.QueryEscape(secret))
}

func (rp *replica) mustToken(t testing.TB, app, secret string) string {
	t.Helper()
	r := rp.token(t, app, secret)
	tok := r.str("access_token")
	if tok == "" {
		t.Fatalf("no token through the gateway: %s", r.body)
	}
	return tok
}

// rotate makes the fake and the cache move to a new token for app: the
// old one is revoked at the fake, reported, and replaced.
// handleOf is the token the gateway hands the credential key for app's
// WeChat token wechatToken.
func handleOf(key, app, wechatToken string) string {
	return handle(&credential{key: []byte(key)}, app, wechatToken)
}

func (s *setup) rotate(t testing.TB, rp *replica, app string) (old, fresh string) {
	t.Helper()
	ctx := context.Background()
	cur, err := rp.cache.Token(ctx, app)
	if err != nil {
		t.Fatal(err)
	}
	s.up.fake.Revoke(app, cur.Value)
	next, err := rp.cache.Invalidate(ctx, app, cur.Value)
	if err != nil || next.Value == cur.Value {
		t.Fatalf("rotation failed: %v", err)
	}
	return cur.Value, next.Value
}
