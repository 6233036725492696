package jssdk_test

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/pkg/jssdk"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

func readJSON(t *testing.T, name string, v any) {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

func sha1Of(s string) string {
	sum := sha1.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

// The worked example of WeChat's JS-SDK documentation.
func TestSignatureDocumentedExample(t *testing.T) {
	var ex struct {
		Ticket    string `json:"jsapi_ticket"`
		Nonce     string `json:"noncestr"`
		Timestamp int64  `json:"timestamp"`
		URL       string `json:"url"`
		String1   string `json:"string1"`
		Signature string `json:"signature"`
	}
	readJSON(t, "jssdk_signature.json", &ex)
	if got := sha1Of(ex.String1); got != ex.Signature {
		t.Fatalf("testdata is inconsistent: sha1(string1) = %s, documented %s", got, ex.Signature)
	}
	if got := jssdk.Signature(ex.Ticket, ex.Nonce, ex.Timestamp, ex.URL); got != ex.Signature {
		t.Errorf("Signature = %s, want the documented %s", got, ex.Signature)
	}
	// The fragment is not signed.
	for _, frag := range []string{"#", "#wechat_redirect", "#/route?x=1#y"} {
		if got := jssdk.Signature(ex.Ticket, ex.Nonce, ex.Timestamp, ex.URL+frag); got != ex.Signature {
			t.Errorf("with fragment %q: signature %s, want %s", frag, got, ex.Signature)
		}
	}
	// Every input is signed.
	for name, got := range map[string]string{
		"ticket":    jssdk.Signature(ex.Ticket+"x", ex.Nonce, ex.Timestamp, ex.URL),
		"nonce":     jssdk.Signature(ex.Ticket, ex.Nonce+"x", ex.Timestamp, ex.URL),
		"timestamp": jssdk.Signature(ex.Ticket, ex.Nonce, ex.Timestamp+1, ex.URL),
		"url":       jssdk.Signature(ex.Ticket, ex.Nonce, ex.Timestamp, ex.URL+"&x"),
	} {
		if got == ex.Signature {
			t.Errorf("changing the %s left the signature unchanged", name)
		}
	}
}

// The card-ext worked example of WeChat's JS-SDK documentation (appendix 4).
func TestCardSignatureDocumentedExample(t *testing.T) {
	var ex struct {
		Ticket    string `json:"api_ticket"`
		Timestamp string `json:"timestamp"`
		CardID    string `json:"card_id"`
		Code      string `json:"code"`
		Nonce     string `json:"nonce_str"`
		Joined    string `json:"sorted_joined"`
		Signature string `json:"signature"`
	}
	readJSON(t, "card_signature.json", &ex)
	if got := sha1Of(ex.Joined); got != ex.Signature {
		t.Fatalf("testdata is inconsistent: sha1(sorted_joined) = %s, documented %s", got, ex.Signature)
	}
	// In any order, with empty fields (openid not bound) or without.
	for _, values := range [][]string{
		{ex.Ticket, ex.Timestamp, ex.CardID, ex.Code, ex.Nonce},
		{ex.Nonce, ex.Code, ex.CardID, ex.Timestamp, ex.Ticket},
		{ex.Ticket, ex.Timestamp, ex.CardID, ex.Code, "", ex.Nonce},
	} {
		if got := jssdk.CardSignature(values...); got != ex.Signature {
			t.Errorf("CardSignature(%q) = %s, want the documented %s", values, got, ex.Signature)
		}
	}
	if got := jssdk.CardSignature(ex.Ticket, ex.Timestamp, ex.CardID, ex.Nonce); got == ex.Signature {
		t.Error("leaving out the code left the signature unchanged")
	}
}

func TestParsePageURL(t *testing.T) {
	for _, ok := range []string{"https://example.com/", "http://mp.weixin.qq.com?params=value", "https://a.example.com:8443/p/q?x=%E4%B8%AD#frag"} {
		if _, err := jssdk.ParsePageURL(ok); err != nil {
			t.Errorf("ParsePageURL(%q): %v", ok, err)
		}
	}
	long := "https://example.com/" + strings.Repeat("a", jssdk.MaxPageURLBytes)
	for raw, want := range map[string]string{
		"":                                  "is empty",
		long:                                "over the 2048-byte limit",
		"/relative/path":                    "must be absolute",
		"example.com/page":                  "must be absolute",
		"ftp://example.com/":                "scheme http or https",
		"javascript:alert(1)":               "scheme http or https",
		"https:///nohost":                   "has no host",
		"https://user:pass@example.com/":    "user info",
		"https://example.com/a b":           "byte 0x20 at offset 21",
		"https://example.com/\u4e2d":        "byte 0xe4",
		"https://example.com/\nInjected: 1": "byte 0x0a",
		"https://[::1/":                     "does not parse",
	} {
		_, err := jssdk.ParsePageURL(raw)
		var perr *jssdk.PageURLError
		if !errors.As(err, &perr) || !strings.Contains(err.Error(), want) {
			t.Errorf("ParsePageURL(%.40q): err = %v, want a PageURLError saying %q", raw, err, want)
			continue
		}
		if strings.Contains(raw, "pass") && strings.Contains(err.Error(), "pass") {
			t.Errorf("error %q quotes the URL", err)
		}
	}
	if _, err := jssdk.ParsePageURL("https://example.com/" + strings.Repeat("a", jssdk.MaxPageURLBytes-len("https://example.com/"))); err != nil {
		t.Errorf("a URL of exactly %d bytes: %v", jssdk.MaxPageURLBytes, err)
	}
}

// ticketsFunc is a Tickets from a function.
type ticketsFunc func(ctx context.Context, appID, kind string) (tokencache.Token, error)

func (f ticketsFunc) Ticket(ctx context.Context, appID, kind string) (tokencache.Token, error) {
	return f(ctx, appID, kind)
}

var t0 = time.Unix(1414587457, 0)

func TestSignerConfig(t *testing.T) {
	var ex struct {
		Ticket    string `json:"jsapi_ticket"`
		Nonce     string `json:"noncestr"`
		URL       string `json:"url"`
		Signature string `json:"signature"`
	}
	readJSON(t, "jssdk_signature.json", &ex)
	var asked []string
	tickets := ticketsFunc(func(_ context.Context, appID, kind string) (tokencache.Token, error) {
		asked = append(asked, appID+"/"+kind)
		return tokencache.Token{Value: ex.Ticket, UsableUntil: t0.Add(time.Minute)}, nil
	})
	s, err := jssdk.NewSigner(tickets, jssdk.WithClock(func() time.Time { return t0 }), jssdk.WithNonce(func() string { return ex.Nonce }))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := s.Config(context.Background(), "wxapp", ex.URL+"#top")
	if err != nil {
		t.Fatal(err)
	}
	want := jssdk.Config{AppID: "wxapp", Timestamp: t0.Unix(), NonceStr: ex.Nonce, Signature: ex.Signature}
	if cfg != want {
		t.Errorf("Config = %+v, want %+v", cfg, want)
	}
	if len(asked) != 1 || asked[0] != "wxapp/"+wechat.TicketJSAPI {
		t.Errorf("asked for tickets %q, want one jsapi ticket of wxapp", asked)
	}
	b, _ := json.Marshal(cfg)
	if got := string(b); got != `{"appId":"wxapp","timestamp":1414587457,"nonceStr":"Wm3WZYTPz0wzccnW","signature":"0f9de62fce790f9a083d5c99e95740ceb90c27ed"}` {
		t.Errorf("JSON = %s, want wx.config's field names", got)
	}
	// A bad URL is refused before any ticket is taken.
	asked = nil
	if _, err := s.Config(context.Background(), "wxapp", "ftp://x/"); err == nil || len(asked) != 0 {
		t.Errorf("bad URL: err %v, tickets asked %q; want an error and no ticket", err, asked)
	}
}

func TestSignerRefusesTicketNotLive(t *testing.T) {
	now := t0
	tickets := ticketsFunc(func(context.Context, string, string) (tokencache.Token, error) {
		return tokencache.Token{Value: "TICKET", UsableUntil: t0}, nil
	})
	s, _ := jssdk.NewSigner(tickets, jssdk.WithClock(func() time.Time { return now }))
	if _, err := s.Config(context.Background(), "wxapp", "https://example.com/"); !errors.Is(err, jssdk.ErrNoLiveTicket) {
		t.Errorf("ticket at its usable end: err = %v, want ErrNoLiveTicket", err)
	}
	if _, err := s.Card(context.Background(), "wxapp", jssdk.CardRequest{CardID: "c"}); !errors.Is(err, jssdk.ErrNoLiveTicket) {
		t.Errorf("card, ticket at its usable end: err = %v, want ErrNoLiveTicket", err)
	}
	now = t0.Add(-time.Millisecond)
	if _, err := s.Config(context.Background(), "wxapp", "https://example.com/"); err != nil {
		t.Errorf("ticket a millisecond before its usable end: %v", err)
	}
	boom := errors.New("redis down")
	s2, _ := jssdk.NewSigner(ticketsFunc(func(context.Context, string, string) (tokencache.Token, error) { return tokencache.Token{}, boom }))
	if _, err := s2.Config(context.Background(), "wxapp", "https://example.com/"); !errors.Is(err, boom) {
		t.Errorf("ticket error: err = %v, want it passed on", err)
	}
}

func TestSignerCard(t *testing.T) {
	var ex struct {
		Ticket    string `json:"api_ticket"`
		Timestamp string `json:"timestamp"`
		CardID    string `json:"card_id"`
		Code      string `json:"code"`
		Nonce     string `json:"nonce_str"`
		Signature string `json:"signature"`
	}
	readJSON(t, "card_signature.json", &ex)
	var kinds []string
	tickets := ticketsFunc(func(_ context.Context, _, kind string) (tokencache.Token, error) {
		kinds = append(kinds, kind)
		return tokencache.Token{Value: ex.Ticket, UsableUntil: t0.Add(time.Hour)}, nil
	})
	clock := func() time.Time { return time.Unix(1404896688, 0) }
	s, _ := jssdk.NewSigner(tickets, jssdk.WithClock(clock), jssdk.WithNonce(func() string { return ex.Nonce }))
	got, err := s.Card(context.Background(), "wxapp", jssdk.CardRequest{CardID: ex.CardID, Code: ex.Code})
	if err != nil {
		t.Fatal(err)
	}
	if want := (jssdk.CardSigned{Timestamp: ex.Timestamp, NonceStr: ex.Nonce, Signature: ex.Signature, SignType: "SHA1"}); got != want {
		t.Errorf("Card = %+v, want the documented %+v", got, want)
	}
	if len(kinds) != 1 || kinds[0] != wechat.TicketWxCard {
		t.Errorf("ticket kinds asked %q, want one wx_card", kinds)
	}
	// chooseCard signs the appid as well.
	cs, _ := s.Card(context.Background(), "wxapp", jssdk.CardRequest{CardID: ex.CardID, Code: ex.Code, ChooseCard: true})
	if want := jssdk.CardSignature(ex.Ticket, ex.Timestamp, ex.CardID, ex.Code, ex.Nonce, "wxapp"); cs.Signature != want {
		t.Errorf("chooseCard signature %s, want %s (appid included)", cs.Signature, want)
	}
	if _, err := s.Card(context.Background(), "wxapp", jssdk.CardRequest{OpenID: "o p"}); err == nil || !strings.Contains(err.Error(), "openid") {
		t.Errorf("openid with a space: err = %v, want one naming openid", err)
	}
}

func TestNewNonce(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		n := jssdk.NewNonce()
		if len(n) < 16 || len(n) > 32 || seen[n] {
			t.Fatalf("nonce %q: want 16 to 32 characters, never repeated", n)
		}
		seen[n] = true
	}
}
