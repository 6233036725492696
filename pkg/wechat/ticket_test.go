package wechat_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// testAccessToken has characters a query escapes, so both of its forms are
// checked for in error strings.
const testAccessToken = "ACCESS/TOKEN+0123456789abcdef=="

func TestTicketRequest(t *testing.T) {
	for _, kind := range wechat.TicketKinds() {
		t.Run(kind, func(t *testing.T) {
			var got *http.Request
			srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got = r.Clone(context.Background())
				w.Header().Set("Date", "Fri, 20 Nov 2026 12:00:01 GMT")
				replyWith(200, `{"errcode":0,"errmsg":"ok","ticket":"TICKET_`+kind+`","expires_in":7200}`)(w, r)
			}))
			c := wechat.NewClient(wechat.WithBaseURL(srv.URL), wechat.WithClock(func() time.Time { return t0 }))
			tok, err := c.Ticket(context.Background(), testAccessToken, kind)
			if err != nil {
				t.Fatal(err)
			}
			if tok.Value != "TICKET_"+kind || tok.ExpiresIn != 2*time.Hour || !tok.FetchedAt.Equal(t0) || !tok.IssuedAt.Equal(t0.Add(time.Second)) {
				t.Fatalf("ticket = %v (issued %v), want TICKET_%s, 2h, fetched at t0, issued t0+1s", tok, tok.IssuedAt, kind)
			}
			if got.Method != http.MethodGet || got.URL.Path != wechat.EndpointTicket {
				t.Errorf("request = %s %s, want GET %s", got.Method, got.URL.Path, wechat.EndpointTicket)
			}
			want := url.Values{"access_token": {testAccessToken}, "type": {kind}}
			if q := got.URL.Query(); q.Encode() != want.Encode() {
				t.Errorf("query = %v, want access_token and type=%s", q, kind)
			}
		})
	}
}

func TestTicketBadArguments(t *testing.T) {
	c := wechat.NewClient(wechat.WithBaseURL("http://127.0.0.1:1"))
	for _, tc := range []struct{ token, kind, want string }{
		{testAccessToken, "", "unknown ticket kind"},
		{testAccessToken, "JSAPI", "unknown ticket kind"},
		{testAccessToken, "jsapi&type=wx_card", "unknown ticket kind"},
		{"", wechat.TicketJSAPI, "empty access token"},
	} {
		_, err := c.Ticket(context.Background(), tc.token, tc.kind)
		if !errors.Is(err, wechat.ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Ticket(%q): err = %v, want ErrConfig saying %q", tc.kind, err, tc.want)
		}
	}
}

// ticketMalformed is malformedCases with the ticket field in place of
// access_token: the rules are the same, the field named is the ticket.
func ticketMalformed() []malformedCase {
	out := make([]malformedCase, len(malformedCases))
	for i, tc := range malformedCases {
		tc.body = strings.ReplaceAll(tc.body, `"access_token"`, `"ticket"`)
		tc.reason = strings.ReplaceAll(tc.reason, "access_token", "ticket")
		out[i] = tc
	}
	return append(out,
		malformedCase{"only an access_token", 200, `{"errcode":0,"errmsg":"ok","access_token":"T","expires_in":7200}`, "ticket missing"},
		malformedCase{"ok with empty ticket", 200, `{"errcode":0,"errmsg":"ok","ticket":"","expires_in":7200}`, "ticket is empty"},
		malformedCase{"ok without expires_in", 200, `{"errcode":0,"errmsg":"ok","ticket":"T"}`, "expires_in missing"},
	)
}

func TestParseTicketReplyMalformed(t *testing.T) {
	for _, tc := range ticketMalformed() {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := wechat.ParseTicketReply(tc.status, []byte(tc.body), t0)
			checkMalformed(t, tok, err, wechat.EndpointTicket, tc)
		})
	}
}

func TestTicketMalformedThroughClient(t *testing.T) {
	for _, tc := range ticketMalformed() {
		if tc.status == 302 || strings.Contains(tc.name, "64 KiB") {
			continue // the redirect and size rules are the client's, tested for the token endpoints
		}
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t, replyWith(tc.status, tc.body))
			c := wechat.NewClient(wechat.WithBaseURL(srv.URL))
			tok, err := c.Ticket(context.Background(), testAccessToken, wechat.TicketJSAPI)
			checkMalformed(t, tok, err, wechat.EndpointTicket, tc)
		})
	}
}

func TestTicketErrcodeClasses(t *testing.T) {
	for _, tc := range []struct {
		code  int
		class error
	}{
		{40001, wechat.ErrTokenInvalid}, {40014, wechat.ErrTokenInvalid}, {42001, wechat.ErrTokenInvalid},
		{-1, wechat.ErrTransient}, {45011, wechat.ErrTransient}, {45009, wechat.ErrQuota},
		{40097, wechat.ErrConfig}, {48001, wechat.ErrConfig},
		{99999, wechat.ErrTransient}, // unknown: back off, never hammer
	} {
		// errmsg echoes the access token: it must not reach the error.
		body := `{"errcode":` + itoa(tc.code) + `,"errmsg":"bad ` + testAccessToken + ` and ` + url.QueryEscape(testAccessToken) + `"}`
		srv := newServer(t, replyWith(200, body))
		c := wechat.NewClient(wechat.WithBaseURL(srv.URL))
		_, err := c.Ticket(context.Background(), testAccessToken, wechat.TicketWxCard)
		werr := checkClass(t, err, wechat.EndpointTicket, tc.code, tc.class)
		if werr != nil && errors.Is(err, wechat.ErrOutcomeUnknown) {
			t.Errorf("errcode %d: an answered call must not be ErrOutcomeUnknown", tc.code)
		}
		assertNoAccessToken(t, err)
	}
}

func TestTicketAccessTokenNeverInErrors(t *testing.T) {
	// A transport failure: Go's *url.Error would print the URL, whose query
	// holds the access token.
	c := wechat.NewClient(wechat.WithBaseURL("http://"+closedPort(t)), wechat.WithHTTPClient(&http.Client{Timeout: time.Second}))
	_, err := c.Ticket(context.Background(), testAccessToken, wechat.TicketJSAPI)
	if !errors.Is(err, wechat.ErrTransient) {
		t.Fatalf("err = %v, want transient", err)
	}
	assertNoAccessToken(t, err)
	// A malformed reply quoting it.
	srv := newServer(t, replyWith(200, `{"ticket":"`+testAccessToken+` x","expires_in":7200}`))
	_, err = wechat.NewClient(wechat.WithBaseURL(srv.URL)).Ticket(context.Background(), testAccessToken, wechat.TicketJSAPI)
	if !errors.Is(err, wechat.ErrMalformedReply) {
		t.Fatalf("err = %v, want malformed", err)
	}
	assertNoAccessToken(t, err)
}

func assertNoAccessToken(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	for _, form := range []string{testAccessToken, url.QueryEscape(testAccessToken)} {
		if strings.Contains(err.Error(), form) {
			t.Errorf("error %q contains the access token", err)
		}
	}
}
