package wechattest_test

import (
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

func getTicket(t *testing.T, s *wechattest.Server, token, kind string) reply {
	t.Helper()
	return getURL(t, s.URL()+"/cgi-bin/ticket/getticket?"+url.Values{"access_token": {token}, "type": {kind}}.Encode())
}

func jsSign(ticket, nonce string, ts int64, u string) string {
	sum := sha1.Sum([]byte("jsapi_ticket=" + ticket + "&noncestr=" + nonce + "&timestamp=" + strconv.FormatInt(ts, 10) + "&url=" + u))
	return hex.EncodeToString(sum[:])
}

func TestTicketReuse(t *testing.T) {
	s, c := newFake(t, wechattest.WithTicketRefetch(wechattest.TicketReuse))
	token := fetchClassic(t, s)
	first := getTicket(t, s, token, "jsapi")
	c.Advance(time.Hour)
	again := getTicket(t, s, token, "jsapi")
	if again.Ticket != first.Ticket || again.ExpiresIn != 7200 {
		t.Fatalf("an hour later: ticket %s (same: %v), expires_in %d; want the same ticket, expires_in still 7200",
			wechat.Fingerprint(again.Ticket), again.Ticket == first.Ticket, again.ExpiresIn)
	}
	card := getTicket(t, s, token, "wx_card")
	if card.Ticket == first.Ticket || card.Ticket == "" {
		t.Error("the wx_card ticket must be its own")
	}
	if n := s.TicketsMinted(testApp, "jsapi"); n != 1 {
		t.Errorf("jsapi tickets minted = %d, want 1", n)
	}
	// The reused ticket dies at its first mint plus the lifetime, whatever
	// the later replies said.
	c.Advance(time.Hour - time.Second)
	if st := s.TicketState(testApp, "jsapi", first.Ticket); st != wechattest.Live {
		t.Errorf("a second before its end: %v, want live", st)
	}
	c.Advance(time.Second)
	if st := s.TicketState(testApp, "jsapi", first.Ticket); st != wechattest.Expired {
		t.Errorf("at its end: %v, want expired (the reply an hour in said 7200 s, and lied)", st)
	}
	token = fetchClassic(t, s)
	next := getTicket(t, s, token, "jsapi")
	if next.Ticket == first.Ticket || s.TicketsMinted(testApp, "jsapi") != 2 || s.CurrentTicket(testApp, "jsapi") != next.Ticket {
		t.Errorf("after expiry: want a new current ticket, 2 minted; got %d minted", s.TicketsMinted(testApp, "jsapi"))
	}
	if st := s.Stats(testApp); st.TicketsMinted != 3 || st.TicketCalls != 4 {
		t.Errorf("Stats: TicketsMinted %d, TicketCalls %d; want 3 and 4", st.TicketsMinted, st.TicketCalls)
	}
}

func TestTicketRotate(t *testing.T) {
	s, c := newFake(t, wechattest.WithTicketRefetch(wechattest.TicketRotate), wechattest.WithTicketGrace(time.Minute))
	token := fetchClassic(t, s)
	first := getTicket(t, s, token, "jsapi")
	second := getTicket(t, s, token, "jsapi")
	if second.Ticket == first.Ticket || s.TicketsMinted(testApp, "jsapi") != 2 {
		t.Fatal("rotate: a second call must mint a new ticket")
	}
	c.Advance(time.Minute - time.Millisecond)
	if st := s.TicketState(testApp, "jsapi", first.Ticket); st != wechattest.Live {
		t.Errorf("replaced, inside its grace: %v, want live", st)
	}
	c.Advance(time.Millisecond)
	if st := s.TicketState(testApp, "jsapi", first.Ticket); st != wechattest.Superseded {
		t.Errorf("replaced, grace over: %v, want superseded", st)
	}
	if st := s.TicketState(testApp, "jsapi", second.Ticket); st != wechattest.Live {
		t.Errorf("current: %v, want live", st)
	}
	if st := s.TicketState(testApp, "wx_card", second.Ticket); st != wechattest.Unknown {
		t.Errorf("a jsapi ticket asked as wx_card: %v, want unknown", st)
	}
}

func TestVerifyJSSDK(t *testing.T) {
	s, c := newFake(t, wechattest.WithTicketRefetch(wechattest.TicketRotate), wechattest.WithTicketGrace(time.Minute))
	token := fetchClassic(t, s)
	old := getTicket(t, s, token, "jsapi").Ticket
	page := "https://example.com/p?x=1"
	ts := start.Unix()
	if err := s.VerifyJSSDK(testApp, page+"#frag", "nonce", ts, jsSign(old, "nonce", ts, page)); err != nil {
		t.Errorf("live ticket (fragment ignored): %v", err)
	}
	getTicket(t, s, token, "jsapi") // replaces old
	c.Advance(time.Minute)
	if err := s.VerifyJSSDK(testApp, page, "nonce", ts, jsSign(old, "nonce", ts, page)); !errors.Is(err, wechattest.ErrDeadTicketSignature) {
		t.Errorf("replaced ticket past its grace: %v, want ErrDeadTicketSignature", err)
	}
	if err := s.VerifyJSSDK(testApp, page, "nonce", ts, jsSign(old, "other", ts, page)); !errors.Is(err, wechattest.ErrInvalidSignature) {
		t.Errorf("wrong nonce: %v, want ErrInvalidSignature", err)
	}
	if err := s.VerifyJSSDK("wxnobody", page, "nonce", ts, jsSign(old, "nonce", ts, page)); !errors.Is(err, wechattest.ErrInvalidSignature) {
		t.Errorf("another app: %v, want ErrInvalidSignature", err)
	}
	if st := s.Stats(testApp); st.SignaturesOK != 1 || st.SignaturesDead != 1 || st.SignaturesInvalid != 1 {
		t.Errorf("Stats = %+v, want 1 ok, 1 dead, 1 invalid", st)
	}
	// Over HTTP.
	cur := s.CurrentTicket(testApp, "jsapi")
	q := url.Values{"appid": {testApp}, "url": {page}, "noncestr": {"n"}, "timestamp": {strconv.FormatInt(ts, 10)}, "signature": {jsSign(cur, "n", ts, page)}}
	if r := getURL(t, s.URL()+wechattest.PathVerifyJSSDK+"?"+q.Encode()); r.ErrCode != 0 {
		t.Errorf("HTTP verify of a live signature: %s", r.Raw)
	}
	q.Set("signature", jsSign(old, "n", ts, page))
	if r := getURL(t, s.URL()+wechattest.PathVerifyJSSDK+"?"+q.Encode()); r.ErrCode != 63002 || !strings.Contains(r.ErrMsg, "no longer live") {
		t.Errorf("HTTP verify of a dead-ticket signature: %s, want 63002 naming the dead ticket", r.Raw)
	}
}

func TestVerifyCard(t *testing.T) {
	s, c := newFake(t)
	token := fetchClassic(t, s)
	tk := getTicket(t, s, token, "wx_card").Ticket
	v := []string{tk, "1404896688", "card", "123"}
	sort.Strings(v)
	sum := sha1.Sum([]byte(strings.Join(v, "")))
	sig := hex.EncodeToString(sum[:])
	if err := s.VerifyCard(testApp, sig, "123", "card", "1404896688"); err != nil {
		t.Errorf("live: %v", err)
	}
	c.Advance(2 * time.Hour)
	if err := s.VerifyCard(testApp, sig, "123", "card", "1404896688"); !errors.Is(err, wechattest.ErrDeadTicketSignature) {
		t.Errorf("expired ticket: %v, want ErrDeadTicketSignature", err)
	}
}

func TestTicketFaults(t *testing.T) {
	s, _ := newFake(t)
	token := fetchClassic(t, s)
	// A fault for the token endpoints never hits getticket.
	s.InjectFault(wechattest.Fault{Kind: wechattest.FaultBusy})
	if r := getTicket(t, s, token, "jsapi"); r.ErrCode != 0 || r.Ticket == "" {
		t.Errorf("token-endpoint fault applied to getticket: %s", r.Raw)
	}
	if s.PendingFaults() != 1 {
		t.Fatal("the token-endpoint fault must still be queued")
	}
	s.InjectFault(wechattest.Fault{Kind: wechattest.FaultEmptyToken, Endpoint: wechat.EndpointTicket})
	if r := getTicket(t, s, token, "wx_card"); r.ErrCode != 0 || r.Ticket != "" || !strings.Contains(r.Raw, `"ticket":""`) {
		t.Errorf("empty-ticket fault: %s", r.Raw)
	}
	if n := s.TicketsMinted(testApp, "wx_card"); n != 0 {
		t.Errorf("an empty-ticket answer minted %d tickets, want 0", n)
	}
	s.InjectFault(wechattest.Fault{Kind: wechattest.FaultErrcode, Code: 45009, Endpoint: wechat.EndpointTicket})
	if r := getTicket(t, s, token, "wx_card"); r.ErrCode != 45009 {
		t.Errorf("errcode fault: %s", r.Raw)
	}
}

func TestTicketRenew(t *testing.T) {
	s, c := newFake(t, wechattest.WithTicketRefetch(wechattest.TicketRenew))
	token := fetchClassic(t, s)
	first := getTicket(t, s, token, "jsapi")
	c.Advance(time.Hour)
	if again := getTicket(t, s, token, "jsapi"); again.Ticket != first.Ticket || again.ExpiresIn != 7200 {
		t.Fatal("renew: a second call must return the same ticket")
	}
	c.Advance(90 * time.Minute) // past its first life, inside the renewed one
	if st := s.TicketState(testApp, "jsapi", first.Ticket); st != wechattest.Live {
		t.Errorf("renewed ticket 2.5 h after its mint: %v, want live", st)
	}
	c.Advance(30 * time.Minute)
	if st := s.TicketState(testApp, "jsapi", first.Ticket); st != wechattest.Expired {
		t.Errorf("2 h after its renewal: %v, want expired", st)
	}
	if n := s.TicketsMinted(testApp, "jsapi"); n != 1 {
		t.Errorf("%d minted, want 1", n)
	}
}
