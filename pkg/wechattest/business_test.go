package wechattest_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

// TestMain checks every reply body any test received: the secret, right
// or wrong, must never come back.
func TestMain(m *testing.M) {
	code := m.Run()
	bodies.mu.Lock()
	for _, b := range bodies.all {
		if strings.Contains(b, testSecret) || strings.Contains(b, "other-secret") {
			fmt.Fprintf(os.Stderr, "FAIL: a reply echoed a secret: %s\n", b)
			code = 1
		}
	}
	bodies.mu.Unlock()
	os.Exit(code)
}

func TestBusinessMissingToken(t *testing.T) {
	s, _ := newFake(t)
	if r := getURL(t, s.URL()+"/cgi-bin/get_api_domain_ip"); r.ErrCode != 41001 {
		t.Errorf("no access_token: errcode %d, want 41001", r.ErrCode)
	}
	if r := getURL(t, s.URL()+"/cgi-bin/ticket/getticket?type=jsapi"); r.ErrCode != 41001 {
		t.Errorf("getticket without access_token: errcode %d, want 41001", r.ErrCode)
	}
}

func TestTicket(t *testing.T) {
	s, c := newFake(t)
	token := fetchClassic(t, s)
	ticketURL := func(token, typ string) string {
		return s.URL() + "/cgi-bin/ticket/getticket?" + url.Values{"access_token": {token}, "type": {typ}}.Encode()
	}
	for _, typ := range []string{"jsapi", "wx_card"} {
		r := getURL(t, ticketURL(token, typ))
		if r.ErrCode != 0 || r.ErrMsg != "ok" || r.Ticket == "" || r.ExpiresIn != 7200 {
			t.Errorf("type %s: want errcode 0, errmsg ok, a ticket and expires_in 7200, got %s", typ, r.Raw)
		}
	}
	for _, typ := range []string{"", "card", "JSAPI"} {
		if r := getURL(t, ticketURL(token, typ)); r.ErrCode != 40097 {
			t.Errorf("type %q: errcode %d, want 40097", typ, r.ErrCode)
		}
	}
	if r := getURL(t, ticketURL("never-minted", "jsapi")); r.ErrCode != 40014 {
		t.Errorf("unknown token: errcode %d, want 40014", r.ErrCode)
	}
	fetchClassic(t, s)
	c.Advance(5 * time.Minute)
	if r := getURL(t, ticketURL(token, "jsapi")); r.ErrCode != 40001 {
		t.Errorf("superseded token: errcode %d, want 40001", r.ErrCode)
	}
	c.Advance(2 * time.Hour)
	if r := getURL(t, ticketURL(token, "jsapi")); r.ErrCode != 42001 {
		t.Errorf("expired token: errcode %d, want 42001", r.ErrCode)
	}
	if st := s.Stats(testApp); st.BusinessOK != 2 || st.BusinessSuperseded != 1 || st.BusinessExpired != 1 {
		t.Errorf("Stats = %+v, want BusinessOK 2 (bad types not counted), Superseded 1, Expired 1", st)
	}
}

func TestClearQuotaEndpoint(t *testing.T) {
	s, _ := newFake(t, wechattest.WithDailyQuota(1))
	token := fetchClassic(t, s)
	if r := getURL(t, classicURL(s.URL(), testApp, testSecret)); r.ErrCode != 45009 {
		t.Fatalf("quota 1, second call: errcode %d, want 45009", r.ErrCode)
	}
	post := func(token, body string) reply {
		req, _ := http.NewRequest(http.MethodPost, s.URL()+"/cgi-bin/clear_quota?access_token="+url.QueryEscape(token), strings.NewReader(body))
		return do(t, nil, req)
	}
	if r := post(token, `{"appid":"wxsomeoneelse"}`); r.ErrCode != 40013 {
		t.Fatalf("clear_quota for another app: errcode %d, want 40013", r.ErrCode)
	}
	if r := post("never-minted", `{"appid":"`+testApp+`"}`); r.ErrCode != 40014 {
		t.Fatalf("clear_quota with an unknown token: errcode %d, want 40014", r.ErrCode)
	}
	if r := post(token, `not json`); r.ErrCode != 47001 {
		t.Fatalf("clear_quota with a bad body: errcode %d, want 47001", r.ErrCode)
	}
	if r := post(token, `{"appid":"`+testApp+`"}`); r.ErrCode != 0 {
		t.Fatalf("clear_quota: %s", r.Raw)
	}
	if st := s.Stats(testApp); st.QuotaUsed != 0 {
		t.Fatalf("QuotaUsed after clear_quota = %d, want 0", st.QuotaUsed)
	}
	fetchClassic(t, s)
}

func TestConcurrentMinting(t *testing.T) {
	const workers, calls = 16, 25
	s, c := newFake(t)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	defer client.CloseIdleConnections()

	var mu sync.Mutex
	tokens := map[string]bool{}
	stable := map[string]bool{}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range calls {
				req, _ := http.NewRequest(http.MethodGet, classicURL(s.URL(), testApp, testSecret), nil)
				r, err := doErr(client, req)
				if err != nil || r.AccessToken == "" {
					errs <- fmt.Errorf("classic: %v %s", err, r.Raw)
					return
				}
				req, _ = http.NewRequest(http.MethodPost, s.URL()+"/cgi-bin/stable_token", strings.NewReader(stableBody(testApp, testSecret, false)))
				sr, err := doErr(client, req)
				if err != nil || sr.AccessToken == "" {
					errs <- fmt.Errorf("stable: %v %s", err, sr.Raw)
					return
				}
				req, _ = http.NewRequest(http.MethodGet, s.URL()+"/cgi-bin/get_api_domain_ip?access_token="+r.AccessToken, nil)
				br, err := doErr(client, req)
				if err != nil || br.ErrCode != 0 {
					errs <- fmt.Errorf("business call right after minting: %v %s", err, br.Raw)
					return
				}
				s.TokenState(testApp, r.AccessToken)
				s.Stats("")
				c.Advance(time.Millisecond) // the clock moves under the server's feet
				mu.Lock()
				tokens[r.AccessToken] = true
				stable[sr.AccessToken] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(tokens) != workers*calls {
		t.Fatalf("%d distinct classic tokens from %d calls", len(tokens), workers*calls)
	}
	if len(stable) != 1 {
		t.Fatalf("%d distinct stable tokens, want 1: concurrent stable callers must share", len(stable))
	}
	if !tokens[s.CurrentToken(testApp)] {
		t.Fatal("CurrentToken is not one of the minted tokens")
	}
	st := s.Stats(testApp)
	if st.Minted != workers*calls+1 || st.QuotaUsed != workers*calls || st.BusinessOK != workers*calls {
		t.Fatalf("Stats = %+v, want Minted %d, QuotaUsed %d, BusinessOK %d", st, workers*calls+1, workers*calls, workers*calls)
	}
}

func TestHandlerMountedElsewhere(t *testing.T) {
	s := wechattest.NewServer(wechattest.WithApp(testApp, testSecret))
	defer s.Close()
	mux := http.NewServeMux()
	mux.Handle("/cgi-bin/", s.Handler())
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {})
	ts := httptest.NewServer(mux)
	defer ts.Close()
	r := getURL(t, classicURL(ts.URL, testApp, testSecret))
	if r.AccessToken == "" || s.CurrentToken(testApp) != r.AccessToken {
		t.Fatalf("token via the mounted handler: %s", r.Raw)
	}
	// Same state behind both addresses.
	if code := business(t, s, r.AccessToken); code != 0 {
		t.Fatalf("token minted via the mount, checked via URL(): errcode %d", code)
	}
}

func TestAddApp(t *testing.T) {
	s, c := newFake(t)
	s.AddApp("wxlate", "late-secret")
	r := getURL(t, classicURL(s.URL(), "wxlate", "late-secret"))
	if r.AccessToken == "" {
		t.Fatalf("app added after start: %s", r.Raw)
	}
	s.AddApp("wxlate", "rotated-secret")
	if r := getURL(t, classicURL(s.URL(), "wxlate", "late-secret")); r.ErrCode != 40125 {
		t.Fatalf("old secret after rotation: errcode %d, want 40125", r.ErrCode)
	}
	c.Advance(time.Minute)
	if code := business(t, s, r.AccessToken); code != 0 {
		t.Fatalf("rotating the secret must not kill tokens: errcode %d", code)
	}
	if st := s.Stats("wxnever"); st != (wechattest.Stats{}) {
		t.Fatalf("Stats of an unknown app = %+v, want zero", st)
	}
}

func TestBadOptions(t *testing.T) {
	for name, opt := range map[string]wechattest.Option{
		"WithLifetime":   wechattest.WithLifetime(0),
		"WithGrace":      wechattest.WithGrace(-time.Second),
		"WithDailyQuota": wechattest.WithDailyQuota(-1),
		"WithClock":      wechattest.WithClock(nil),
		"WithApp":        wechattest.WithApp("wx", ""),
	} {
		func() {
			defer func() {
				msg := fmt.Sprint(recover())
				if !strings.Contains(msg, name) {
					t.Errorf("NewServer(bad %s): panic %q does not name the option", name, msg)
				}
			}()
			s := wechattest.NewServer(opt)
			s.Close()
		}()
	}
	spy := &fatalSpy{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		wechattest.New(spy, wechattest.WithLifetime(-time.Second))
	}()
	<-done
	if !strings.Contains(spy.msg, "WithLifetime") {
		t.Errorf("New with a bad option: Fatal(%q), want a message naming WithLifetime", spy.msg)
	}
}

type fatalSpy struct {
	testing.TB
	msg string
}

func (f *fatalSpy) Helper() {}
func (f *fatalSpy) Fatal(args ...any) {
	f.msg = fmt.Sprint(args...)
}

func TestTokenStateString(t *testing.T) {
	for st, want := range map[wechattest.TokenState]string{
		wechattest.Live: "live", wechattest.Superseded: "superseded", wechattest.Expired: "expired", wechattest.Unknown: "unknown",
	} {
		if st.String() != want {
			t.Errorf("%d.String() = %q, want %q", int(st), st.String(), want)
		}
	}
}

// Every path that receives the secret (or something that looks like one in
// another field) answers without it.
func TestSecretNeverInAnyResponse(t *testing.T) {
	s, _ := newFake(t)
	wrong := "wrong-" + testSecret
	var got []string
	get := func(rawURL string) {
		status, body := rawGet(t, rawURL)
		got = append(got, fmt.Sprintf("%d %s", status, body))
	}
	post := func(path, body string) {
		status, b := postRaw(t, s.URL()+path, body)
		got = append(got, fmt.Sprintf("%d %s", status, b))
	}
	get(classicURL(s.URL(), testApp, testSecret))
	get(classicURL(s.URL(), testApp, wrong))
	get(classicURL(s.URL(), testSecret, testSecret)) // secret in the appid field
	get(s.URL() + "/cgi-bin/token?" + url.Values{"grant_type": {testSecret}, "appid": {testApp}, "secret": {testSecret}}.Encode())
	get(s.URL() + "/cgi-bin/token?" + url.Values{"grant_type": {"client_credential"}, "secret": {testSecret}}.Encode())
	post("/cgi-bin/stable_token", stableBody(testApp, testSecret, false))
	post("/cgi-bin/stable_token", stableBody(testApp, wrong, true))
	post("/cgi-bin/stable_token", stableBody(testSecret, testSecret, false))
	post("/cgi-bin/stable_token", `{"secret":"`+testSecret+`",`)
	get(s.URL() + "/cgi-bin/stable_token?secret=" + testSecret)
	get(s.URL() + "/cgi-bin/get_api_domain_ip?access_token=" + testSecret)
	get(s.URL() + "/cgi-bin/ticket/getticket?type=" + testSecret + "&access_token=" + s.CurrentToken(testApp))
	post("/cgi-bin/clear_quota?access_token="+testSecret, `{"appid":"`+testSecret+`"}`)
	s.InjectFault(wechattest.Fault{Kind: wechattest.FaultTruncatedJSON, Times: 2})
	get(classicURL(s.URL(), testApp, testSecret))
	get(classicURL(s.URL(), testApp, wrong))
	s.InjectFault(wechattest.Fault{Kind: wechattest.FaultBusy})
	get(classicURL(s.URL(), testApp, testSecret))
	for _, b := range got {
		if strings.Contains(b, testSecret) {
			t.Errorf("reply contains the secret: %s", b)
		}
	}
	if len(got) != 16 {
		t.Fatalf("checked %d replies, want 16", len(got))
	}
}
