package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/pkg/jssdk"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

const testTicket = "TICKET_sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy"

// fakeTickets holds one live ticket per app and kind.
type fakeTickets struct {
	mu    sync.Mutex
	tok   tokencache.Token
	err   error
	calls []string
}

func (f *fakeTickets) Ticket(_ context.Context, app, kind string) (tokencache.Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, app+"/"+kind)
	if f.err != nil {
		return tokencache.Token{}, f.err
	}
	t := f.tok
	t.Value += "_" + kind
	return t, nil
}

func newTicketEnv(t *testing.T, edit func(*Config)) (*env, *fakeTickets) {
	t.Helper()
	ft := &fakeTickets{tok: tokencache.Token{Value: testTicket, Version: 3, UsableUntil: t0.Add(time.Hour + 500*time.Millisecond)}}
	e := newEnv(t, func(c *Config) {
		c.Tickets = ft
		c.AppTickets = map[string][]string{"wxa": {"jsapi", "wx_card"}, "wxb": {"jsapi"}}
		c.APIKeys = append(c.APIKeys, APIKey{Name: "pages", Key: "key-pages-0123456789abcd", Apps: []string{"wxa"}, PageHosts: []string{"m.example.com"}})
		if edit != nil {
			edit(c)
		}
	})
	return e, ft
}

func TestGetTicket(t *testing.T) {
	e, ft := newTicketEnv(t, nil)
	w := e.do(req{path: "/v1/apps/wxa/tickets/jsapi", key: keyBackend})
	if w.Code != http.StatusOK || w.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("status %d, Cache-Control %q: %s", w.Code, w.Header().Get("Cache-Control"), w.Body)
	}
	var got map[string]any
	json.Unmarshal(w.Body.Bytes(), &got)
	if got["ticket"] != testTicket+"_jsapi" || got["expires_in"] != float64(3600) || got["version"] != float64(3) || len(got) != 4 {
		t.Errorf("body %s", w.Body)
	}
	if w := e.do(req{path: "/v1/apps/wxa/tickets/wx_card", key: keyBackend}); w.Code != http.StatusOK {
		t.Errorf("wx_card: %d %s", w.Code, w.Body)
	}
	// Same auth and error shapes as the token route.
	errorOf(t, e.do(req{path: "/v1/apps/wxa/tickets/jsapi"}), http.StatusUnauthorized, "missing Authorization")
	errorOf(t, e.do(req{path: "/v1/apps/wxb/tickets/jsapi", key: keyBackend}), http.StatusForbidden, "may not read app")
	errorOf(t, e.do(req{path: "/v1/apps/wxnone/tickets/jsapi", key: keyAll}), http.StatusNotFound, "unknown app")
	errorOf(t, e.do(req{path: "/v1/apps/wxa/tickets/card", key: keyAll}), http.StatusNotFound, "unknown ticket kind")
	errorOf(t, e.do(req{path: "/v1/apps/wxb/tickets/wx_card", key: keyAll}), http.StatusNotFound, "no wx_card ticket configured")
	errorOf(t, e.do(req{method: http.MethodPost, path: "/v1/apps/wxa/tickets/jsapi", key: keyAll}), http.StatusMethodNotAllowed, "not allowed")
	if len(ft.calls) != 2 {
		t.Errorf("ticket calls %v: refused requests must not reach the cache", ft.calls)
	}
	ft.err = tokencache.ErrUnavailable
	errorOf(t, e.do(req{path: "/v1/apps/wxa/tickets/jsapi", key: keyAll}), http.StatusServiceUnavailable, "unavailable")
}

func (e *env) postJSON(path, key, body string) *httptest.ResponseRecorder {
	e.t.Helper()
	return e.do(req{method: http.MethodPost, path: path, key: key, contentType: "application/json", body: body})
}

func TestJSSDKConfig(t *testing.T) {
	e, ft := newTicketEnv(t, nil)
	page := "https://m.example.com/shop?id=1#top"
	w := e.postJSON("/v1/apps/wxa/jssdk-config", keyBackend, `{"url":"`+page+`"}`)
	if w.Code != http.StatusOK {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	var cfg jssdk.Config
	dec := json.NewDecoder(strings.NewReader(w.Body.String()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		t.Fatalf("body %s: %v", w.Body, err)
	}
	want := jssdk.Signature(testTicket+"_jsapi", cfg.NonceStr, t0.Unix(), "https://m.example.com/shop?id=1")
	if cfg.AppID != "wxa" || cfg.Timestamp != t0.Unix() || len(cfg.NonceStr) < 16 || cfg.Signature != want {
		t.Errorf("config %+v, want appId wxa, timestamp %d, a nonce, signature %s", cfg, t0.Unix(), want)
	}
	if strings.Contains(w.Body.String(), testTicket) {
		t.Error("the config carries the ticket itself")
	}
	// Page hosts of a limited key.
	if w := e.postJSON("/v1/apps/wxa/jssdk-config", "key-pages-0123456789abcd", `{"url":"https://M.example.com:8443/x"}`); w.Code != http.StatusOK {
		t.Errorf("allowed host: %d %s", w.Code, w.Body)
	}
	errorOf(t, e.postJSON("/v1/apps/wxa/jssdk-config", "key-pages-0123456789abcd", `{"url":"https://evil.example.net/"}`), http.StatusForbidden, `may not sign pages of host "evil.example.net"`)
	// Bad requests.
	for body, want := range map[string]string{
		`{"url":"ftp://m.example.com/"}`: "scheme http or https",
		`{"url":"/relative"}`:            "must be absolute",
		`{"url":"https://m.example.com/` + strings.Repeat("a", 2100) + `"}`: "over the 2048-byte limit",
		`{"url":""}`:                 "is empty",
		`{}`:                         "is empty",
		`{"url":"https://a/","x":1}`: `unknown field (allowed: "url")`,
		`{"url":5}`:                  `"url" must be a string`,
		`{"url":"https://a/"} {}`:    "data after the object",
		`not json`:                   "syntax error",
	} {
		errorOf(t, e.postJSON("/v1/apps/wxa/jssdk-config", keyAll, body), http.StatusBadRequest, want)
	}
	errorOf(t, e.do(req{method: http.MethodPost, path: "/v1/apps/wxa/jssdk-config", key: keyAll, body: `{"url":"https://a/"}`}), http.StatusUnsupportedMediaType, "want application/json")
	errorOf(t, e.postJSON("/v1/apps/wxa/jssdk-config", keyAll, `{"url":"https://a/","pad":"`+strings.Repeat("x", MaxBodyBytes)+`"}`), http.StatusRequestEntityTooLarge, "larger than")
	// Not live at signing time: 503, nothing signed.
	ft.tok.UsableUntil = t0
	errorOf(t, e.postJSON("/v1/apps/wxa/jssdk-config", keyAll, `{"url":"https://a/"}`), http.StatusServiceUnavailable, "no live ticket")
	ft.err = &tokencache.HeldError{AppID: "wxa", Until: t0.Add(time.Minute), Err: &wechat.Error{Code: -1, Endpoint: wechat.EndpointTicket}}
	errorOf(t, e.postJSON("/v1/apps/wxa/jssdk-config", keyAll, `{"url":"https://a/"}`), http.StatusBadGateway, "upstream WeChat failed")
}

func TestCardSignature(t *testing.T) {
	e, _ := newTicketEnv(t, nil)
	w := e.postJSON("/v1/apps/wxa/card-signature", keyBackend, `{"card_id":"pjZ8Yt1XGILfi-FUsewpnnolGgZk","code":"1434008071"}`)
	if w.Code != http.StatusOK {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	var got jssdk.CardSigned
	json.Unmarshal(w.Body.Bytes(), &got)
	want := jssdk.CardSignature(testTicket+"_wx_card", got.Timestamp, "pjZ8Yt1XGILfi-FUsewpnnolGgZk", "1434008071", got.NonceStr)
	if got.Signature != want || got.SignType != "SHA1" || got.Timestamp != "1795215600" {
		t.Errorf("card signature %+v, want signature %s over the wx_card ticket", got, want)
	}
	errorOf(t, e.postJSON("/v1/apps/wxa/card-signature", keyBackend, `{"openid":"a b"}`), http.StatusBadRequest, "card field openid")
	errorOf(t, e.postJSON("/v1/apps/wxb/card-signature", keyAll, `{}`), http.StatusNotFound, "no wx_card ticket configured")
}

func TestTicketConfigValidated(t *testing.T) {
	for name, tc := range map[string]struct {
		edit func(*Config)
		want string
	}{
		"kind":      {func(c *Config) { c.AppTickets = map[string][]string{"wxa": {"card"}} }, "unknown ticket kind"},
		"app":       {func(c *Config) { c.AppTickets = map[string][]string{"wxz": {"jsapi"}} }, `app "wxz" is not configured`},
		"no source": {func(c *Config) { c.Tickets = nil }, "Tickets is nil"},
		"host":      {func(c *Config) { c.APIKeys[0].PageHosts = []string{"https://m.example.com"} }, "want a bare host name"},
	} {
		cfg := defaultConfig(newFakeTokens("wxa", "wxb"))
		cfg.Tickets = &fakeTickets{}
		cfg.AppTickets = map[string][]string{"wxa": {"jsapi"}}
		tc.edit(&cfg)
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", name, err, tc.want)
		}
	}
}

func TestTicketLogsNeverCarryTickets(t *testing.T) {
	e, ft := newTicketEnv(t, nil)
	e.do(req{path: "/v1/apps/wxa/tickets/jsapi", key: keyAll})
	e.postJSON("/v1/apps/wxa/jssdk-config", keyAll, `{"url":"https://a/"}`)
	ft.tok.UsableUntil = t0
	e.postJSON("/v1/apps/wxa/jssdk-config", keyAll, `{"url":"https://a/"}`) // a 503, logged at WARN
	if logs := e.logs.String(); strings.Contains(logs, testTicket) || !strings.Contains(logs, RouteJSSDKConfig) {
		t.Errorf("logs hold a ticket, or lack the route:\n%s", logs)
	}
}
