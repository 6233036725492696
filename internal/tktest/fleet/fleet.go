// Package fleet is the shared test fixture of processes that share one
// Redis and one fake WeChat: caches on a tktest backend, the fake, and
// callers that use the token as an app does (take it, call a business API
// with it, and on a dead-token answer report it and retry once).
//
// The dead-token rule is wechat.ClassifyBusiness's (40001, 40014 and
// 42001), imported, not restated. The judge of every scenario is the
// fake's own counters (AssertNoDeadToken), never what a caller believed.
package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/tktest"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

// Fleet is processes (Caches) sharing a Redis and a fake WeChat.
type Fleet struct {
	T      testing.TB
	Fake   *wechattest.Server
	Apps   []string
	Caches []*tokencache.Cache
	// HTTP is the apps' client for the business API, closed at cleanup.
	HTTP *http.Client

	// What the callers met: business calls answered ok, with a dead token,
	// with another errcode; loopback failures (a starved machine: not
	// judged); and Token or Invalidate errors.
	OK, Dead, OtherCode, TransportErrs, TokenErrs atomic.Int64
	mu                                            sync.Mutex
	errSamples                                    []string
}

// New is a fleet of no processes yet for apps on fake; add caches with
// Add or AddOn.
func New(t testing.TB, fake *wechattest.Server, apps ...string) *Fleet {
	f := &Fleet{T: t, Fake: fake, Apps: apps,
		HTTP: &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	t.Cleanup(f.HTTP.CloseIdleConnections)
	return f
}

// Add adds a process: a cache on rdb, closed at cleanup.
func (f *Fleet) Add(c *tokencache.Cache, err error) *tokencache.Cache {
	f.T.Helper()
	if err != nil {
		f.T.Fatal(err)
	}
	f.T.Cleanup(func() { _ = c.Close() })
	f.Caches = append(f.Caches, c)
	return c
}

// AddOn adds n processes on backend b, each with a client of its own.
func (f *Fleet) AddOn(b *tktest.Backend, n int, src tokencache.Source, opts ...tokencache.Option) {
	f.T.Helper()
	for i := 0; i < n; i++ {
		f.Add(tokencache.New(b.Client(), src, opts...))
	}
}

// NoteErr counts a Token or Invalidate error and keeps the first few.
func (f *Fleet) NoteErr(err error) {
	f.TokenErrs.Add(1)
	f.mu.Lock()
	if len(f.errSamples) < 5 {
		f.errSamples = append(f.errSamples, err.Error())
	}
	f.mu.Unlock()
}

// ErrSamples are the first Token or Invalidate errors.
func (f *Fleet) ErrSamples() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.errSamples...)
}

// Call takes app's token from c and uses it on the business API, as an app
// would: on a dead-token answer it reports exactly that token and retries
// once with what Invalidate returned.
func (f *Fleet) Call(c *tokencache.Cache, app string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	tok, err := c.Token(ctx, app)
	if err != nil {
		f.NoteErr(err)
		return
	}
	if code := f.Business(ctx, tok.Value); DeadToken(code) {
		fresh, err := c.Invalidate(ctx, app, tok.Value)
		if err != nil {
			f.NoteErr(err)
			return
		}
		f.Business(ctx, fresh.Value)
	}
}

// DeadToken says whether a business API's errcode says the token it was
// called with is no longer valid.
func DeadToken(code int) bool {
	return errors.Is(wechat.ClassifyBusiness(code), wechat.ErrTokenInvalid)
}

// Business calls the fake's business API with token and counts its answer.
// It returns the errcode, or -2 if the loopback call itself failed (a
// starved machine: it says nothing about the token, and the fake's
// counters judge).
func (f *Fleet) Business(ctx context.Context, token string) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		f.Fake.URL()+"/cgi-bin/get_api_domain_ip?access_token="+url.QueryEscape(token), nil)
	if err != nil {
		f.T.Fatal(err)
	}
	resp, err := f.HTTP.Do(req)
	if err != nil {
		f.TransportErrs.Add(1)
		return -2
	}
	defer resp.Body.Close()
	var body struct {
		ErrCode int `json:"errcode"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	switch {
	case body.ErrCode == 0:
		f.OK.Add(1)
	case DeadToken(body.ErrCode):
		f.Dead.Add(1)
	default:
		f.OtherCode.Add(1)
	}
	return body.ErrCode
}

// Run is the herd under steady load: per goroutines on every process and
// app, each calling (Call) every period, until d has passed or stop is
// closed (nil: never).
func (f *Fleet) Run(d time.Duration, per int, period time.Duration, stop <-chan struct{}) {
	deadline := time.Now().Add(d)
	f.Concurrently(per, func(c *tokencache.Cache, app string) {
		tick := time.NewTicker(period)
		defer tick.Stop()
		for time.Now().Before(deadline) {
			f.Call(c, app)
			select {
			case <-tick.C:
			case <-stop:
				return
			}
		}
	})
}

// Concurrently runs fn per times for every process and app, each in a
// goroutine of its own, all released at once, and waits for them.
func (f *Fleet) Concurrently(per int, fn func(c *tokencache.Cache, app string)) {
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for _, c := range f.Caches {
		for _, app := range f.Apps {
			for g := 0; g < per; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-gate
					fn(c, app)
				}()
			}
		}
	}
	close(gate)
	wg.Wait()
}

// Herd is the thundering herd: per callers on every process and app,
// released at once, each asking (Token, or Invalidate of one token) within
// timeout. It returns which tokens each app's callers got; an error is
// counted (NoteErr) instead.
func (f *Fleet) Herd(per int, timeout time.Duration, ask func(ctx context.Context, c *tokencache.Cache, app string) (tokencache.Token, error)) *SameForAll {
	got := &SameForAll{}
	f.Concurrently(per, func(c *tokencache.Cache, app string) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		tok, err := ask(ctx, c, app)
		if err != nil {
			f.NoteErr(err)
			return
		}
		got.Add(app, tok.Value)
	})
	return got
}

// AssertNoDeadToken checks, from the fake's own counters, that no business
// call of any app carried a token WeChat no longer accepted, and that some
// succeeded (or the scenario proved nothing).
func (f *Fleet) AssertNoDeadToken() {
	f.T.Helper()
	for _, app := range f.Apps {
		st := f.Fake.Stats(app)
		if st.BusinessSuperseded != 0 || st.BusinessExpired != 0 || st.BusinessInvalid != 0 {
			f.T.Errorf("%s: business calls on a dead token: 40001=%d 42001=%d 40014=%d (ok=%d)",
				app, st.BusinessSuperseded, st.BusinessExpired, st.BusinessInvalid, st.BusinessOK)
		}
		if st.BusinessOK == 0 {
			f.T.Errorf("%s: no business call succeeded: the test proved nothing", app)
		}
	}
	if n := f.OtherCode.Load(); n != 0 {
		f.T.Errorf("%d business calls answered another errcode", n)
	}
	if n := f.TransportErrs.Load(); n > 0 {
		f.T.Logf("%d business calls failed on loopback before reaching the fake (not judged)", n)
	}
}

// Refused is how many fetched tokens the processes' writes lost at the
// compare-and-set: each a fetch wasted.
func (f *Fleet) Refused() int64 {
	var n int64
	for _, c := range f.Caches {
		n += c.Admin().Stats().Refused
	}
	return n
}

// SameForAll collects the token every caller got, per app, to check that
// they all got the same one.
type SameForAll struct {
	mu   sync.Mutex
	seen map[string]map[string]int // app -> fingerprint -> callers
}

// Add records that a caller got token for app.
func (s *SameForAll) Add(app, token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen = map[string]map[string]int{}
	}
	if s.seen[app] == nil {
		s.seen[app] = map[string]int{}
	}
	s.seen[app][wechat.Fingerprint(token)]++
}

// Check reports every app whose callers got more (or fewer) than one token.
func (s *SameForAll) Check(t testing.TB, what string, apps []string) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, app := range apps {
		if n := len(s.seen[app]); n != 1 {
			t.Errorf("%s: %s: callers got %d different tokens (%v), want 1", what, app, n, s.seen[app])
		}
	}
}
