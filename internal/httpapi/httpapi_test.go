package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenkeeper/tokenkeeper/internal/metrics"
	"github.com/tokenkeeper/tokenkeeper/internal/testlog"
	"github.com/tokenkeeper/tokenkeeper/internal/tktest"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

var t0 = time.Date(2026, 11, 20, 23, 0, 0, 0, time.UTC) // 07:00 in Beijing

const (
	keyAll     = "key-all-0123456789abcdef"
	keyBackend = "key-backend-0123456789ab"
	keyWrong   = "key-wrong-0123456789abcd"
)

// fakeTokens holds one token per app; Invalidate of the current token
// replaces it, of any other returns the current one.
type fakeTokens struct {
	mu          sync.Mutex
	tokens      map[string]tokencache.Token
	err         error
	invalidated []string
	tokenCalls  int
}

func newFakeTokens(apps ...string) *fakeTokens {
	f := &fakeTokens{tokens: map[string]tokencache.Token{}}
	for _, app := range apps {
		f.tokens[app] = tokencache.Token{
			Value:       "TOKEN_" + app + "_v1_abcdefghijklmnopqrstuvwxyz",
			Version:     1,
			UsableUntil: t0.Add(90*time.Minute + 999*time.Millisecond),
			RefreshAt:   t0.Add(85 * time.Minute),
			ExpiresAt:   t0.Add(91 * time.Minute),
			FetchedAt:   t0.Add(-29 * time.Minute),
		}
	}
	return f
}

func (f *fakeTokens) Token(ctx context.Context, app string) (tokencache.Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokenCalls++
	if f.err != nil {
		return tokencache.Token{}, f.err
	}
	return f.tokens[app], nil
}

func (f *fakeTokens) Invalidate(ctx context.Context, app, bad string) (tokencache.Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.invalidated = append(f.invalidated, bad)
	if f.err != nil {
		return tokencache.Token{}, f.err
	}
	cur := f.tokens[app]
	if cur.Value == bad {
		cur.Version++
		cur.Value = fmt.Sprintf("TOKEN_%s_v%d_abcdefghijklmnopqrstuvwxyz", app, cur.Version)
		f.tokens[app] = cur
	}
	return cur, nil
}

func (f *fakeTokens) current(app string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tokens[app].Value
}

func (f *fakeTokens) invalidations() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.invalidated...)
}

type env struct {
	t      *testing.T
	h      http.Handler
	tokens *fakeTokens
	clock  *tktest.Clock
	logs   *testlog.Buffer
	reg    *prometheus.Registry
}

func defaultConfig(tokens *fakeTokens) Config {
	return Config{
		Tokens: tokens,
		Apps:   []string{"wxa", "wxb"},
		APIKeys: []APIKey{
			{Name: "ops", Key: keyAll, Apps: []string{"*"}},
			{Name: "backend", Key: keyBackend, Apps: []string{"wxa"}},
		},
	}
}

// newEnv builds the API on fakes, logging everything at DEBUG into a
// buffer; edit, if set, changes the config first.
func newEnv(t *testing.T, edit func(*Config)) *env {
	t.Helper()
	e := &env{t: t, tokens: newFakeTokens("wxa", "wxb"), clock: tktest.NewClock(t0), logs: &testlog.Buffer{}, reg: prometheus.NewRegistry()}
	m, err := metrics.New(e.reg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := defaultConfig(e.tokens)
	cfg.Clock = e.clock.Now
	cfg.Logger = slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.Metrics = m
	cfg.Gatherer = e.reg
	if edit != nil {
		edit(&cfg)
	}
	e.h, err = New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return e
}

type req struct {
	method, path, key, contentType, body string
	auth                                 string // raw Authorization header, overrides key
}

func (e *env) do(r req) *httptest.ResponseRecorder {
	e.t.Helper()
	if r.method == "" {
		r.method = http.MethodGet
	}
	hr := httptest.NewRequest(r.method, r.path, strings.NewReader(r.body))
	switch {
	case r.auth != "":
		hr.Header.Set("Authorization", r.auth)
	case r.key != "":
		hr.Header.Set("Authorization", "Bearer "+r.key)
	}
	if r.contentType != "" {
		hr.Header.Set("Content-Type", r.contentType)
	}
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, hr)
	return w
}

func (e *env) invalidate(app, key, token string) *httptest.ResponseRecorder {
	e.t.Helper()
	body, _ := json.Marshal(map[string]string{"access_token": token})
	return e.do(req{method: http.MethodPost, path: "/v1/apps/" + app + "/invalidate", key: key, contentType: "application/json", body: string(body)})
}

// errorOf checks the status, the JSON error shape, and that the message
// contains want.
func errorOf(t *testing.T, w *httptest.ResponseRecorder, status int, want string) {
	t.Helper()
	if w.Code != status {
		t.Fatalf("status %d; want %d (body %q)", w.Code, status, w.Body.String())
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q; want application/json", ct)
	}
	var body map[string]any
	dec := json.NewDecoder(w.Body)
	dec.UseNumber()
	if err := dec.Decode(&body); err != nil {
		t.Fatalf("error body is not JSON: %v", err)
	}
	msg, ok := body["error"].(string)
	if !ok || len(body) != 1 {
		t.Fatalf("error body %v; want exactly {\"error\": string}", body)
	}
	if !strings.Contains(msg, want) {
		t.Fatalf("error %q; want it to contain %q", msg, want)
	}
}

func tokenOf(t *testing.T, w *httptest.ResponseRecorder) tokenResponse {
	t.Helper()
	if w.Code != http.StatusOK {
		t.Fatalf("status %d; want 200 (body %q)", w.Code, w.Body.String())
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(w.Body.Bytes(), &raw); err != nil {
		t.Fatalf("body is not JSON: %v", err)
	}
	for _, k := range []string{"access_token", "expires_in", "expires_at", "version"} {
		if _, ok := raw[k]; !ok {
			t.Fatalf("body %s lacks %q", w.Body.String(), k)
		}
	}
	if len(raw) != 4 {
		t.Fatalf("body %s has extra fields", w.Body.String())
	}
	var tr tokenResponse
	json.Unmarshal(w.Body.Bytes(), &tr)
	return tr
}

func TestGetToken(t *testing.T) {
	e := newEnv(t, nil)
	w := e.do(req{path: "/v1/apps/wxa/token", key: keyBackend})
	got := tokenOf(t, w)
	want := tokenResponse{
		AccessToken: e.tokens.current("wxa"),
		ExpiresIn:   5400, // 90m59.999s of usable life left, in whole seconds
		ExpiresAt:   "2026-11-21T00:30:00Z",
		Version:     1,
	}
	if got != want {
		t.Fatalf("got %+v; want %+v", got, want)
	}
	if cc := w.Header().Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("Cache-Control %q; want no-store", cc)
	}
	e.clock.Advance(time.Hour)
	if got := tokenOf(t, e.do(req{path: "/v1/apps/wxa/token", key: keyBackend})); got.ExpiresIn != 1800 {
		t.Fatalf("an hour later expires_in = %d; want 1800", got.ExpiresIn)
	}
	e.clock.Advance(2 * time.Hour)
	if got := tokenOf(t, e.do(req{path: "/v1/apps/wxa/token", key: keyBackend})); got.ExpiresIn != 0 {
		t.Fatalf("past usable end expires_in = %d; want 0, never negative", got.ExpiresIn)
	}
}

func TestAuth(t *testing.T) {
	e := newEnv(t, nil)
	for _, tc := range []struct {
		name   string
		r      req
		status int
		msg    string
	}{
		{"no header", req{path: "/v1/apps/wxa/token"}, 401, "missing Authorization header"},
		{"basic scheme", req{path: "/v1/apps/wxa/token", auth: "Basic " + keyAll}, 401, "malformed Authorization header"},
		{"bearer without key", req{path: "/v1/apps/wxa/token", auth: "Bearer   "}, 401, "malformed Authorization header"},
		{"wrong key", req{path: "/v1/apps/wxa/token", key: keyWrong}, 401, "invalid API key"},
		{"prefix of a key", req{path: "/v1/apps/wxa/token", key: keyAll[:10]}, 401, "invalid API key"},
		{"key with a suffix", req{path: "/v1/apps/wxa/token", key: keyAll + "x"}, 401, "invalid API key"},
		{"key for another app", req{path: "/v1/apps/wxb/token", key: keyBackend}, 403, `API key "backend" may not read app "wxb"`},
		{"key for another app, invalidate", req{method: "POST", path: "/v1/apps/wxb/invalidate", key: keyBackend, contentType: "application/json", body: `{"access_token":"x"}`}, 403, `may not read app "wxb"`},
		// A restricted key learns nothing about which other apps exist.
		{"restricted key, unknown app", req{path: "/v1/apps/wxnope/token", key: keyBackend}, 403, `may not read app "wxnope"`},
		{"star key, unknown app", req{path: "/v1/apps/wxnope/token", key: keyAll}, 404, `unknown app "wxnope"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := e.do(tc.r)
			errorOf(t, w, tc.status, tc.msg)
			if tc.status == 401 && w.Header().Get("WWW-Authenticate") != `Bearer realm="tokenkeeper"` {
				t.Fatalf("WWW-Authenticate %q; want a Bearer challenge", w.Header().Get("WWW-Authenticate"))
			}
		})
	}
	for _, ok := range []req{
		{path: "/v1/apps/wxb/token", key: keyAll},
		{path: "/v1/apps/wxa/token", key: keyBackend},
		{path: "/v1/apps/wxa/token", auth: "bearer " + keyBackend}, // the scheme is case-insensitive
	} {
		if w := e.do(ok); w.Code != 200 {
			t.Fatalf("%+v: status %d; want 200", ok, w.Code)
		}
	}
	if e.tokens.tokenCalls != 3 {
		t.Fatalf("Tokens.Token called %d times; only the 3 authorized requests may reach it", e.tokens.tokenCalls)
	}
	if got := e.tokens.invalidations(); len(got) != 0 {
		t.Fatalf("an unauthorized invalidation reached Tokens: %q", got)
	}
}

func TestNoAPIKeysMeansOpenAndWarns(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.APIKeys = nil })
	if got := tokenOf(t, e.do(req{path: "/v1/apps/wxb/token"})); got.AccessToken != e.tokens.current("wxb") {
		t.Fatalf("open API answered %q", got.AccessToken)
	}
	errorOf(t, e.do(req{path: "/v1/apps/wxnope/token"}), 404, `unknown app "wxnope"`)
	if !strings.Contains(e.logs.String(), "level=WARN") || !strings.Contains(e.logs.String(), "no API keys configured") {
		t.Fatalf("no WARN about the open API in logs:\n%s", e.logs.String())
	}
}

func TestWrongMethod(t *testing.T) {
	e := newEnv(t, nil)
	for _, tc := range []struct {
		method, path, allow string
	}{
		{"POST", "/v1/apps/wxa/token", "GET, HEAD"},
		{"DELETE", "/v1/apps/wxa/token", "GET, HEAD"},
		{"GET", "/v1/apps/wxa/invalidate", "POST"},
		{"PUT", "/v1/apps/wxa/invalidate", "POST"},
		{"POST", "/healthz", "GET, HEAD"},
		{"POST", "/readyz", "GET, HEAD"},
		{"POST", "/metrics", "GET, HEAD"},
	} {
		w := e.do(req{method: tc.method, path: tc.path, key: keyAll})
		errorOf(t, w, 405, "method "+tc.method+" not allowed")
		if got := w.Header().Get("Allow"); got != tc.allow {
			t.Fatalf("%s %s: Allow %q; want %q", tc.method, tc.path, got, tc.allow)
		}
	}
}

func TestUnknownRoute(t *testing.T) {
	e := newEnv(t, nil)
	errorOf(t, e.do(req{path: "/v2/apps/wxa/token", key: keyAll}), 404, "no such route: GET /v2/apps/wxa/token")
	errorOf(t, e.do(req{path: "/v1/apps/wxa/token/extra", key: keyAll}), 404, "no such route")
	errorOf(t, e.do(req{path: "/v1/apps/wxa/token/", key: keyAll}), 404, "no such route")
	// Unclean paths get a JSON 404, not ServeMux's HTML redirect.
	errorOf(t, e.do(req{path: "/v1/apps//token", key: keyAll}), 404, "no such route: GET /v1/apps//token")
	errorOf(t, e.do(req{path: "/v1/apps/wxa/../wxb/token", key: keyAll}), 404, "no such route")
	errorOf(t, e.do(req{method: "POST", path: "/v1/apps/./wxa/invalidate", key: keyAll}), 404, "no such route")
	// An escaped slash stays inside the appid, which is then unknown.
	errorOf(t, e.do(req{path: "/v1/apps/wx%2Fa/token", key: keyAll}), 404, `unknown app "wx/a"`)
}

func TestInvalidate(t *testing.T) {
	e := newEnv(t, nil)
	old := e.tokens.current("wxa")
	got := tokenOf(t, e.invalidate("wxa", keyBackend, old))
	if got.AccessToken == old || got.Version != 2 || got.AccessToken != e.tokens.current("wxa") {
		t.Fatalf("after reporting the current token: %+v; want the replacement, version 2", got)
	}
	// Reporting it again (another server saw it fail too) gets the current
	// one; whether to fetch is the cache's decision, the API passes it on.
	again := tokenOf(t, e.invalidate("wxa", keyBackend, old))
	if again.AccessToken != got.AccessToken || again.Version != 2 {
		t.Fatalf("second report of the old token: %+v; want the current token", again)
	}
	if inv := e.tokens.invalidations(); len(inv) != 2 || inv[0] != old || inv[1] != old {
		t.Fatalf("Tokens.Invalidate saw %q; want the reported token twice", inv)
	}
	for _, ct := range []string{"application/json; charset=utf-8", "Application/JSON"} {
		w := e.do(req{method: "POST", path: "/v1/apps/wxa/invalidate", key: keyBackend, contentType: ct, body: `{"access_token":"stale-token"}`})
		if w.Code != 200 {
			t.Fatalf("Content-Type %q: status %d; want 200", ct, w.Code)
		}
	}
}

func TestInvalidateMalformedRequests(t *testing.T) {
	big := `{"access_token":"` + strings.Repeat("a", MaxBodyBytes) + `"}`
	for _, tc := range []struct {
		name, contentType, body string
		status                  int
		msg                     string
	}{
		{"not JSON", "application/json", `access_token=abc`, 400, "invalid JSON body: syntax error at byte 1"},
		{"truncated", "application/json", `{"access_token":"abc"`, 400, "body ends in the middle of the object"},
		{"empty body", "application/json", ``, 400, "empty body"},
		{"unknown field", "application/json", `{"access_token":"abc","force":true}`, 400, "unknown field"},
		{"misspelt field", "application/json", `{"acess_token":"abc"}`, 400, "unknown field"},
		{"empty token", "application/json", `{"access_token":""}`, 400, `"access_token" is missing or empty`},
		{"missing token", "application/json", `{}`, 400, `"access_token" is missing or empty`},
		{"null token", "application/json", `{"access_token":null}`, 400, `"access_token" is missing or empty`},
		{"null body", "application/json", `null`, 400, `"access_token" is missing or empty`},
		{"number token", "application/json", `{"access_token":12345}`, 400, `"access_token" must be a string`},
		{"array body", "application/json", `["abc"]`, 400, "the body must be a JSON object"},
		{"two objects", "application/json", `{"access_token":"a"}{"access_token":"b"}`, 400, "data after the object"},
		{"trailing garbage", "application/json", `{"access_token":"a"} x`, 400, "data after the object"},
		{"control character", "application/json", `{"access_token":"ab\u0000c"}`, 400, "outside printable ASCII"},
		{"space in token", "application/json", `{"access_token":"ab c"}`, 400, "outside printable ASCII"},
		{"token too long", "application/json", `{"access_token":"` + strings.Repeat("a", 2049) + `"}`, 400, "longer than 2048 bytes"},
		{"oversized body", "application/json", big, 413, "request body larger than 4096 bytes"},
		{"text/plain", "text/plain", `{"access_token":"abc"}`, 415, `Content-Type "text/plain": want application/json`},
		{"no content type", "", `{"access_token":"abc"}`, 415, `Content-Type "": want application/json`},
		{"form", "application/x-www-form-urlencoded", `access_token=abc`, 415, "want application/json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			w := e.do(req{method: "POST", path: "/v1/apps/wxa/invalidate", key: keyAll, contentType: tc.contentType, body: tc.body})
			errorOf(t, w, tc.status, tc.msg)
			if inv := e.tokens.invalidations(); len(inv) != 0 {
				t.Fatalf("a malformed request reached Tokens.Invalidate with %q", inv)
			}
		})
	}
}

// The limit is per API key, over all its apps; reads are never limited.
func TestInvalidateRateLimitPerKeyOverItsApps(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.InvalidateRate, c.InvalidateBurst = 1, 2 })
	for i := range 2 {
		if w := e.invalidate("wxa", keyAll, "stale"); w.Code != 200 {
			t.Fatalf("invalidation %d within the burst: status %d", i+1, w.Code)
		}
	}
	w := e.invalidate("wxa", keyAll, "stale")
	errorOf(t, w, 429, `too many invalidations from API key "ops"; at most 1 per second`)
	if got := w.Header().Get("Retry-After"); got != "1" {
		t.Fatalf("Retry-After %q; want 1", got)
	}
	errorOf(t, e.invalidate("wxb", keyAll, "stale"), 429, `from API key "ops"`) // the same key, another app
	if w := e.invalidate("wxa", keyBackend, "stale"); w.Code != 200 {
		t.Fatalf("another key is limited too: status %d", w.Code)
	}
	if got := len(e.tokens.invalidations()); got != 3 {
		t.Fatalf("%d invalidations reached Tokens; the limited ones must not", got)
	}
	e.clock.Advance(time.Second)
	if w := e.invalidate("wxa", keyAll, "stale"); w.Code != 200 {
		t.Fatalf("a second later: status %d; want 200", w.Code)
	}
	// Reads are never limited.
	for range 10 {
		if w := e.do(req{path: "/v1/apps/wxa/token", key: keyAll}); w.Code != 200 {
			t.Fatalf("token read limited: %d", w.Code)
		}
	}
}

// Without API keys (demo only) there is no one to tell apart: every caller
// shares one limit.
func TestInvalidateRateLimitWithoutKeysIsShared(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.APIKeys, c.InvalidateRate, c.InvalidateBurst = nil, 1, 1 })
	if w := e.invalidate("wxa", "", "stale"); w.Code != 200 {
		t.Fatalf("first invalidation: status %d", w.Code)
	}
	errorOf(t, e.invalidate("wxb", "", "stale"), 429, "too many invalidations; at most 1 per second")
}

// One key sending junk at 20 a second throttles only itself: another key's
// reports of the token that really failed are never answered 429. (The
// cache spends nothing on junk; the fleet-wide limit on real mints is the
// cache's.)
func TestInvalidateRateLimitIsPerKey(t *testing.T) {
	e := newEnv(t, nil) // the defaults: 1 a second, a burst of 5
	hostile429, legit, legit429 := 0, 0, 0
	for i := range 200 { // 10 s of junk at 20/s from "ops"
		e.clock.Advance(50 * time.Millisecond)
		if w := e.invalidate("wxa", keyAll, fmt.Sprintf("junk-%03d", i)); w.Code == http.StatusTooManyRequests {
			hostile429++
		}
		if i%20 == 10 { // once a second, "backend" reports the token that failed
			legit++
			if w := e.invalidate("wxa", keyBackend, e.tokens.current("wxa")); w.Code == http.StatusTooManyRequests {
				legit429++
			}
		}
	}
	if legit429 > 0 {
		t.Fatalf("%d of %d legitimate reports from another key answered 429 while one key sent junk", legit429, legit)
	}
	if hostile429 < 150 {
		t.Fatalf("the junk-sending key got only %d of 200 answered 429; want it throttled to about 1/s", hostile429)
	}
}

func TestErrorMapping(t *testing.T) {
	untilMidnight := 17 * time.Hour // t0 is 07:00 in Beijing
	for _, tc := range []struct {
		name       string
		err        error
		status     int
		msg        string
		retryAfter string
	}{
		{"redis down", fmt.Errorf("%w: app %q: %w", tokencache.ErrUnavailable, "wxa", errors.New("dial tcp 127.0.0.1:1: connect: connection refused")), 503, "token store unavailable", ""},
		{"closed", tokencache.ErrClosed, 503, "token store unavailable", ""},
		{"budget", fmt.Errorf("%w: app %q has used 1500 of 1500", tokencache.ErrBudgetExceeded, "wxa"), 429, "daily fetch budget exhausted", fmt.Sprint(int(untilMidnight.Seconds()))},
		{"held quota", &tokencache.HeldError{AppID: "wxa", Until: t0.Add(2 * time.Hour), Err: &wechat.Error{Code: 45009, Endpoint: wechat.EndpointToken}}, 429, "daily token quota exhausted", "7200"},
		{"quota", fmt.Errorf("fetch: %w", &wechat.Error{Code: 45009, Endpoint: wechat.EndpointToken}), 429, "errcode 45009", fmt.Sprint(int(untilMidnight.Seconds()))},
		{"held transient", &tokencache.HeldError{AppID: "wxa", Until: t0.Add(30 * time.Second), Err: &wechat.Error{Code: -1, Endpoint: wechat.EndpointToken}}, 502, "upstream WeChat failed", "30"},
		{"config", fmt.Errorf("fetch: %w", &wechat.Error{Code: 40125, Endpoint: wechat.EndpointToken, Message: "invalid appsecret"}), 502, "errcode 40125", ""},
		{"transient", fmt.Errorf("fetch: %w", &wechat.Error{Code: -1, Endpoint: wechat.EndpointToken}), 502, "upstream WeChat failed", ""},
		{"timeout", fmt.Errorf("waiting: %w", context.DeadlineExceeded), 504, "timed out waiting for a token", ""},
		{"corrupt", &tokencache.CorruptRecordError{Key: "k", Reason: "bad"}, 500, "internal error", ""},
		{"cancelled", fmt.Errorf("waiting: %w", context.Canceled), 503, "request cancelled", ""},
		{"invalid appid", fmt.Errorf("%w %q: bad", tokencache.ErrInvalidAppID, "wx a"), 400, "invalid appid", ""},
		{"held config", &tokencache.HeldError{AppID: "wxa", Until: t0.Add(5 * time.Minute), Err: &wechat.Error{Code: 40164, Endpoint: wechat.EndpointToken}}, 502, "errcode 40164", "300"},
		{"held budget", &tokencache.HeldError{AppID: "wxa", Until: t0.Add(time.Minute), Err: fmt.Errorf("%w: used up", tokencache.ErrBudgetExceeded)}, 429, "daily fetch budget exhausted", "60"},
		{"minute limit", fmt.Errorf("fetch: %w", &wechat.Error{Code: 45011, Endpoint: wechat.EndpointToken}), 502, "errcode 45011", ""},
		{"lost reply", fmt.Errorf("fetch: %w", &wechat.RequestError{Endpoint: wechat.EndpointToken, Sent: true, Err: errors.New("connection reset")}), 502, "upstream WeChat failed", ""},
		{"malformed reply", &wechat.ReplyError{Endpoint: wechat.EndpointToken, Status: 502, Reason: "not HTTP 200"}, 502, "malformed reply", ""},
		{"fetch timed out", fmt.Errorf("fetch: %w", &wechat.RequestError{Endpoint: wechat.EndpointToken, Sent: true, Err: context.DeadlineExceeded}), 504, "timed out waiting for a token", ""},
		{"config, not sent", &wechat.ConfigError{AppID: "wxa", Reason: "empty secret"}, 502, "empty secret", ""},
		{"other", errors.New("something else"), 500, "internal error", ""},
		{"dead business token", fmt.Errorf("x: %w", &wechat.Error{Code: 40001, Endpoint: wechat.EndpointDomainIP}), 502, "upstream WeChat failed", ""},
		{"passive limited", fmt.Errorf("%w: app %q: 6 passive refreshes in the last 1m0s, fleet-wide", tokencache.ErrPassiveRefreshLimited, "wxa"), 429, "passive refreshes", "60"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			e.tokens.err = tc.err
			for _, w := range []*httptest.ResponseRecorder{
				e.do(req{path: "/v1/apps/wxa/token", key: keyAll}),
				e.invalidate("wxa", keyAll, "stale"),
			} {
				errorOf(t, w, tc.status, tc.msg)
				if got := w.Header().Get("Retry-After"); got != tc.retryAfter {
					t.Fatalf("Retry-After %q; want %q", got, tc.retryAfter)
				}
			}
			if tc.status >= 500 && !strings.Contains(e.logs.String(), "level=WARN msg=\"httpapi: request failed\"") {
				t.Fatalf("a %d was not logged as a failure:\n%s", tc.status, e.logs.String())
			}
		})
	}
}

func TestHealthzAndReadyz(t *testing.T) {
	var readyErr error
	var sawDeadline bool
	e := newEnv(t, func(c *Config) {
		c.Ready = func(ctx context.Context) error {
			_, sawDeadline = ctx.Deadline()
			return readyErr
		}
	})
	if w := e.do(req{path: "/healthz"}); w.Code != 200 || w.Body.String() != "ok\n" {
		t.Fatalf("healthz: %d %q", w.Code, w.Body.String())
	}
	if w := e.do(req{path: "/readyz"}); w.Code != 200 || w.Body.String() != "ok\n" {
		t.Fatalf("readyz when ready: %d %q", w.Code, w.Body.String())
	}
	if !sawDeadline {
		t.Fatal("Ready was called without a deadline")
	}
	readyErr = errors.New("no leader elected")
	errorOf(t, e.do(req{path: "/readyz"}), 503, "not ready: no leader elected")
	// Probes need no key.
	if w := e.do(req{method: "HEAD", path: "/healthz"}); w.Code != 200 {
		t.Fatalf("HEAD healthz: %d", w.Code)
	}
}

func TestMetricsRoute(t *testing.T) {
	e := newEnv(t, nil)
	e.do(req{path: "/v1/apps/wxa/token", key: keyBackend})
	e.do(req{path: "/v1/apps/wxb/token", key: keyBackend})
	e.do(req{path: "/v1/apps/wxa/token"})
	e.do(req{path: "/nowhere"})
	w := e.do(req{path: "/metrics"})
	if w.Code != 200 {
		t.Fatalf("/metrics: %d", w.Code)
	}
	body := w.Body.String()
	for _, want := range []string{
		`tokenkeeper_http_requests_total{code="200",route="/v1/apps/{appid}/token"} 1`,
		`tokenkeeper_http_requests_total{code="401",route="/v1/apps/{appid}/token"} 1`,
		`tokenkeeper_http_requests_total{code="403",route="/v1/apps/{appid}/token"} 1`,
		`tokenkeeper_http_requests_total{code="404",route="other"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Fatalf("/metrics lacks %s:\n%s", want, body)
		}
	}
	off := newEnv(t, func(c *Config) { c.Gatherer = nil })
	errorOf(t, off.do(req{path: "/metrics"}), 404, "metrics are not enabled")
}

func TestNewValidates(t *testing.T) {
	tokens := newFakeTokens()
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"nil tokens", func(c *Config) { c.Tokens = nil }, "Tokens: must not be nil"},
		{"empty app", func(c *Config) { c.Apps = append(c.Apps, "") }, "Apps[2]: empty appid"},
		{"short key", func(c *Config) { c.APIKeys[0].Key = "short" }, `APIKeys[0] ("ops"): key must be at least 16 characters`},
		{"unnamed key", func(c *Config) { c.APIKeys[1].Name = "" }, "APIKeys[1]: empty name"},
		{"duplicate name", func(c *Config) { c.APIKeys[1].Name = "ops" }, `APIKeys[1] ("ops"): name used twice`},
		{"duplicate key", func(c *Config) { c.APIKeys[1].Key = keyAll }, `APIKeys[1] ("backend"): same key as an earlier entry`},
		{"no apps", func(c *Config) { c.APIKeys[1].Apps = nil }, `APIKeys[1] ("backend"): lists no apps`},
		{"unknown app", func(c *Config) { c.APIKeys[1].Apps = []string{"wxz"} }, `APIKeys[1] ("backend"): app "wxz" is not configured`},
		{"negative rate", func(c *Config) { c.InvalidateRate = -1 }, "InvalidateRate -1: must not be negative"},
		{"negative passive window", func(c *Config) { c.PassiveRefreshWindow = -time.Second }, "PassiveRefreshWindow -1s: must not be negative"},
	} {
		cfg := defaultConfig(tokens)
		tc.edit(&cfg)
		_, err := New(cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: New = %v; want an error containing %q", tc.name, err, tc.want)
		}
		if err != nil && (strings.Contains(err.Error(), keyAll) || strings.Contains(err.Error(), keyBackend)) {
			t.Errorf("%s: the error %q reveals a key", tc.name, err)
		}
	}
}

// A full run of requests, good and bad, with DEBUG logging: no token and no
// API key (right or wrong) may appear in any log line.
func TestLogsNeverCarryTokensOrKeys(t *testing.T) {
	e := newEnv(t, nil)
	secrets := []string{keyAll, keyBackend, keyWrong, e.tokens.current("wxa"), e.tokens.current("wxb")}
	oldA := e.tokens.current("wxa")

	e.do(req{path: "/v1/apps/wxa/token", key: keyBackend})
	e.do(req{path: "/v1/apps/wxb/token", key: keyAll})
	e.do(req{path: "/v1/apps/wxb/token", key: keyBackend})
	e.do(req{path: "/v1/apps/wxa/token", key: keyWrong})
	e.do(req{path: "/v1/apps/wxa/token", auth: "Basic " + keyAll})
	e.do(req{path: "/v1/apps/" + keyAll + "/token", key: keyAll})
	e.do(req{path: "/v1/apps/wxa/token?access_token=" + oldA, key: keyAll})
	e.invalidate("wxa", keyBackend, oldA) // replaces it
	secrets = append(secrets, e.tokens.current("wxa"))
	e.invalidate("wxa", keyBackend, oldA)
	e.invalidate("wxa", keyWrong, oldA)
	e.do(req{method: "POST", path: "/v1/apps/wxa/invalidate", key: keyAll, contentType: "application/json", body: `{"access_token":"` + oldA + `","x":1}`})
	e.do(req{method: "POST", path: "/v1/apps/wxa/invalidate", key: keyAll, contentType: "application/json", body: `{"access_token":"` + oldA})
	e.do(req{method: "POST", path: "/v1/apps/wxa/invalidate", key: keyAll, contentType: "text/plain", body: oldA})
	e.do(req{method: "POST", path: "/v1/apps/wxa/invalidate", key: keyAll, contentType: "application/json", body: `{"access_token":"` + oldA + strings.Repeat("x", MaxBodyBytes) + `"}`})
	e.do(req{method: "PUT", path: "/v1/apps/wxa/token?t=" + oldA, key: keyAll})
	e.do(req{path: "/readyz"})
	e.do(req{path: "/metrics"})
	for _, err := range []error{
		fmt.Errorf("%w: app %q: %w", tokencache.ErrUnavailable, "wxa", errors.New("connection refused")),
		&tokencache.HeldError{AppID: "wxa", Until: t0.Add(time.Minute), Err: &wechat.Error{Code: -1, Endpoint: wechat.EndpointToken}},
		errors.New("something unexpected"),
	} {
		e.tokens.err = err
		e.do(req{path: "/v1/apps/wxa/token", key: keyAll})
		e.invalidate("wxa", keyAll, oldA)
	}

	logs := e.logs.String()
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Fatalf("logs contain the secret %q:\n%s", s, logs)
		}
	}
	// The run was logged, usefully: otherwise the check above proves little.
	for _, want := range []string{
		"token=" + wechat.Fingerprint(oldA), // the invalidation, by fingerprint
		"api_key=backend",
		"status=403",
		"status=401",
		"status=503",
		"level=WARN",
	} {
		if !strings.Contains(logs, want) {
			t.Fatalf("logs lack %q:\n%s", want, logs)
		}
	}
	if n := strings.Count(logs, "\n"); n < 20 {
		t.Fatalf("only %d log lines for the whole run", n)
	}
}
