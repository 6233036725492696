package wechattest_test

import (
	"errors"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

var tokenChars = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func TestClassicMintsNewTokenEveryCall(t *testing.T) {
	s, _ := newFake(t)
	r := getURL(t, classicURL(s.URL(), testApp, testSecret))
	if r.Status != http.StatusOK || r.ErrCode != 0 {
		t.Fatalf("want HTTP 200 errcode 0, got %d %s", r.Status, r.Raw)
	}
	if r.ExpiresIn != 7200 {
		t.Errorf("expires_in = %d, want 7200", r.ExpiresIn)
	}
	if len(r.AccessToken) < 100 || !tokenChars.MatchString(r.AccessToken) {
		t.Errorf("token %q: want >= 100 URL-safe characters", r.AccessToken)
	}
	second := fetchClassic(t, s)
	if second == r.AccessToken {
		t.Fatal("two classic calls returned the same token")
	}
	if got := s.CurrentToken(testApp); got != second {
		t.Errorf("CurrentToken is not the newest token")
	}
	if got := s.Stats(testApp); got.Minted != 2 || got.QuotaUsed != 2 || got.Refused != 0 {
		t.Errorf("Stats = %+v, want Minted 2, QuotaUsed 2, Refused 0", got)
	}
}

func TestClassicGraceThenSupersededThenExpired(t *testing.T) {
	s, c := newFake(t)
	old := fetchClassic(t, s)
	if code := business(t, s, old); code != 0 {
		t.Fatalf("fresh token: errcode %d, want 0", code)
	}
	c.Advance(time.Hour)
	newer := fetchClassic(t, s)

	c.Advance(5*time.Minute - time.Second)
	if code := business(t, s, old); code != 0 {
		t.Fatalf("old token inside grace: errcode %d, want 0", code)
	}
	if st := s.TokenState(testApp, old); st != wechattest.Live {
		t.Fatalf("old token inside grace: state %v, want live", st)
	}
	c.Advance(time.Second)
	if code := business(t, s, old); code != 40001 {
		t.Fatalf("old token at grace end: errcode %d, want 40001", code)
	}
	if st := s.TokenState(testApp, old); st != wechattest.Superseded {
		t.Fatalf("old token after grace: state %v, want superseded", st)
	}
	if code := business(t, s, newer); code != 0 {
		t.Fatalf("newer token: errcode %d, want 0", code)
	}
	c.Advance(2 * time.Hour)
	if code := business(t, s, old); code != 42001 {
		t.Fatalf("old token past its expiry: errcode %d, want 42001 (expiry wins)", code)
	}
	if code := business(t, s, newer); code != 42001 {
		t.Fatalf("newer token past its expiry: errcode %d, want 42001", code)
	}
	if st := s.TokenState(testApp, newer); st != wechattest.Expired {
		t.Fatalf("newer token past expiry: state %v, want expired", st)
	}
	if code := business(t, s, "never-minted-token"); code != 40014 {
		t.Fatalf("unknown token: errcode %d, want 40014", code)
	}
	want := wechattest.Stats{Minted: 2, QuotaUsed: 2, BusinessOK: 3, BusinessSuperseded: 1, BusinessExpired: 2}
	if got := s.Stats(testApp); got != want {
		t.Errorf("Stats(app) = %+v, want %+v", got, want)
	}
	if got := s.Stats("").BusinessInvalid; got != 1 {
		t.Errorf(`Stats("").BusinessInvalid = %d, want 1`, got)
	}
	if st := s.TokenState(testApp, "never-minted-token"); st != wechattest.Unknown {
		t.Errorf("unknown token: state %v", st)
	}
	if st := s.TokenState("otherapp", newer); st != wechattest.Unknown {
		t.Errorf("token of another app: state %v, want unknown", st)
	}
}

func TestLifetimeAndGraceOptions(t *testing.T) {
	s, c := newFake(t, wechattest.WithLifetime(1500*time.Millisecond), wechattest.WithGrace(0))
	r := getURL(t, classicURL(s.URL(), testApp, testSecret))
	if r.ExpiresIn != 2 {
		t.Errorf("lifetime 1.5s: expires_in %d, want 2 (rounded up)", r.ExpiresIn)
	}
	c.Advance(1499 * time.Millisecond)
	if code := business(t, s, r.AccessToken); code != 0 {
		t.Fatalf("token 1ms before exact expiry: errcode %d, want 0", code)
	}
	fetchClassic(t, s)
	if code := business(t, s, r.AccessToken); code != 40001 {
		t.Fatalf("grace 0: replaced token errcode %d, want 40001 at once", code)
	}
	c.Advance(time.Millisecond)
	if code := business(t, s, r.AccessToken); code != 42001 {
		t.Fatalf("token at exact expiry: errcode %d, want 42001", code)
	}

	s2, _ := newFake(t, wechattest.WithLifetime(10*time.Millisecond))
	if r := getURL(t, classicURL(s2.URL(), testApp, testSecret)); r.ExpiresIn != 1 {
		t.Errorf("lifetime 10ms: expires_in %d, want 1", r.ExpiresIn)
	}
}

func TestClassicErrors(t *testing.T) {
	s, _ := newFake(t)
	base := s.URL() + "/cgi-bin/token?"
	cases := []struct {
		name  string
		query url.Values
		want  int
	}{
		{"wrong secret", url.Values{"grant_type": {"client_credential"}, "appid": {testApp}, "secret": {"wrong-" + testSecret}}, 40125},
		{"unknown appid", url.Values{"grant_type": {"client_credential"}, "appid": {"wxnope"}, "secret": {testSecret}}, 40013},
		{"missing appid", url.Values{"grant_type": {"client_credential"}, "secret": {testSecret}}, 41002},
		{"missing secret", url.Values{"grant_type": {"client_credential"}, "appid": {testApp}}, 41004},
		{"wrong grant_type", url.Values{"grant_type": {"password"}, "appid": {testApp}, "secret": {testSecret}}, 40002},
		{"missing grant_type", url.Values{"appid": {testApp}, "secret": {testSecret}}, 40002},
	}
	for _, tc := range cases {
		r := getURL(t, base+tc.query.Encode())
		if r.Status != http.StatusOK || r.ErrCode != tc.want || r.ErrMsg == "" || r.AccessToken != "" {
			t.Errorf("%s: want HTTP 200 errcode %d with errmsg, got %d %s", tc.name, tc.want, r.Status, r.Raw)
		}
		if strings.Contains(r.Raw, testSecret) {
			t.Errorf("%s: reply echoes the secret: %s", tc.name, r.Raw)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, classicURL(s.URL(), testApp, testSecret), nil)
	if r := do(t, nil, req); r.ErrCode != 43001 {
		t.Errorf("POST classic: errcode %d, want 43001", r.ErrCode)
	}
	st := s.Stats(testApp)
	if st.Minted != 0 || st.QuotaUsed != 0 {
		t.Errorf("refused calls minted or used quota: %+v", st)
	}
	// Wrong secret, missing secret, wrong grant_type, missing grant_type, POST.
	if st.Refused != 5 {
		t.Errorf("Stats(app).Refused = %d, want 5", st.Refused)
	}
	if all := s.Stats(""); all.Refused != 7 {
		t.Errorf(`Stats("").Refused = %d, want 7 (5 for the app, 2 unattributed)`, all.Refused)
	}
}

func TestDailyQuotaResetsAtBeijingMidnight(t *testing.T) {
	c := newClock(time.Date(2026, 11, 20, 15, 59, 0, 0, time.UTC)) // 23:59 Beijing
	s := wechattest.New(t, wechattest.WithClock(c.Now), wechattest.WithApp(testApp, testSecret), wechattest.WithDailyQuota(3))
	for i := range 3 {
		if r := getURL(t, classicURL(s.URL(), testApp, testSecret)); r.ErrCode != 0 {
			t.Fatalf("call %d within quota: %s", i+1, r.Raw)
		}
	}
	r := getURL(t, classicURL(s.URL(), testApp, testSecret))
	if r.ErrCode != 45009 {
		t.Fatalf("call 4 of quota 3: errcode %d, want 45009", r.ErrCode)
	}
	if st := s.Stats(testApp); st.QuotaUsed != 4 || st.Minted != 3 || st.Refused != 1 {
		t.Fatalf("Stats = %+v, want QuotaUsed 4, Minted 3, Refused 1", st)
	}
	c.Advance(59 * time.Second) // 23:59:59 Beijing: still the same day
	if r := getURL(t, classicURL(s.URL(), testApp, testSecret)); r.ErrCode != 45009 {
		t.Fatalf("one second before Beijing midnight: errcode %d, want 45009", r.ErrCode)
	}
	c.Advance(time.Second) // 00:00 Beijing, 16:00 UTC
	if st := s.Stats(testApp); st.QuotaUsed != 0 {
		t.Fatalf("after Beijing midnight QuotaUsed = %d, want 0", st.QuotaUsed)
	}
	if r := getURL(t, classicURL(s.URL(), testApp, testSecret)); r.ErrCode != 0 {
		t.Fatalf("after Beijing midnight: %s", r.Raw)
	}

	for range 3 {
		getURL(t, classicURL(s.URL(), testApp, testSecret))
	}
	if r := getURL(t, classicURL(s.URL(), testApp, testSecret)); r.ErrCode != 45009 {
		t.Fatalf("quota used up again: errcode %d, want 45009", r.ErrCode)
	}
	s.ResetQuota(testApp)
	if r := getURL(t, classicURL(s.URL(), testApp, testSecret)); r.ErrCode != 0 {
		t.Fatalf("after ResetQuota: %s", r.Raw)
	}
}

func TestLostReply(t *testing.T) {
	s, c := newFake(t)
	previous := fetchClassic(t, s)
	before := s.Stats(testApp).Minted
	s.InjectFault(wechattest.Fault{Kind: wechattest.FaultLostReply})

	// A fresh connection: http.Transport would silently resend a GET whose
	// reused connection died (see TestLostReplyOnReusedConnectionIsRetried).
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(classicURL(s.URL(), testApp, testSecret))
	if err == nil {
		resp.Body.Close()
		t.Fatalf("lost reply: got HTTP %d, want a connection error", resp.StatusCode)
	}
	if got := s.Stats(testApp).Minted; got != before+1 {
		t.Fatalf("Minted = %d after a lost reply, want %d", got, before+1)
	}
	current := s.CurrentToken(testApp)
	if current == previous || current == "" {
		t.Fatal("lost reply did not replace the current token")
	}
	info, ok := s.TokenInfo(testApp, previous)
	if !ok || info.GraceEndsAt.IsZero() {
		t.Fatalf("previous token has no grace deadline after a lost reply: %+v", info)
	}
	if want := c.Now().Add(wechattest.DefaultGrace); !info.GraceEndsAt.Equal(want) {
		t.Errorf("GraceEndsAt = %v, want %v", info.GraceEndsAt, want)
	}
	c.Advance(wechattest.DefaultGrace)
	if code := business(t, s, previous); code != 40001 {
		t.Errorf("previous token after the lost reply's grace: errcode %d, want 40001", code)
	}
	if s.PendingFaults() != 0 {
		t.Errorf("fault not consumed")
	}
}

// Documents a trap for client authors: Go's http.Transport resends a GET
// whose reused keep-alive connection closes without a reply, so one lost
// classic reply costs two mints and the caller never notices.
func TestLostReplyOnReusedConnectionIsRetried(t *testing.T) {
	s, _ := newFake(t)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	req, _ := http.NewRequest(http.MethodGet, classicURL(s.URL(), testApp, testSecret), nil)
	do(t, client, req) // warms the keep-alive connection
	s.InjectFault(wechattest.Fault{Kind: wechattest.FaultLostReply})
	req, _ = http.NewRequest(http.MethodGet, classicURL(s.URL(), testApp, testSecret), nil)
	r := do(t, client, req)
	if r.AccessToken == "" {
		t.Fatalf("retried call: %s", r.Raw)
	}
	if got := s.Stats(testApp).Minted; got != 3 {
		t.Fatalf("Minted = %d, want 3 (warm-up, lost reply, transparent retry)", got)
	}
}

func TestBindsLoopbackOnly(t *testing.T) {
	s, _ := newFake(t)
	u, err := url.Parse(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	host, _, err := net.SplitHostPort(u.Host)
	if err != nil || host != "127.0.0.1" {
		t.Fatalf("URL %q: want host 127.0.0.1", s.URL())
	}
}

func TestCloseStopsServing(t *testing.T) {
	s := wechattest.NewServer(wechattest.WithApp(testApp, testSecret))
	fetchClassic(t, s)
	s.Close()
	s.Close() // idempotent
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := client.Get(s.URL() + "/cgi-bin/get_api_domain_ip")
	if err == nil {
		resp.Body.Close()
		t.Fatal("closed server still answers")
	}
	var opErr *net.OpError
	if !errors.As(err, &opErr) {
		t.Fatalf("want a dial error, got %v", err)
	}
}
