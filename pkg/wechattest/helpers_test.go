package wechattest_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/tktest"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

const (
	testApp    = "wxtestapp000001"
	testSecret = "S3cretValue-never-echo-0123456789"
)

// clock is a manual clock for WithClock.
type clock = tktest.Clock

func newClock(t time.Time) *clock { return tktest.NewClock(t) }

// start is 10:00 Beijing time, far from the quota reset.
var start = time.Date(2026, 11, 20, 2, 0, 0, 0, time.UTC)

func newFake(t *testing.T, opts ...wechattest.Option) (*wechattest.Server, *clock) {
	t.Helper()
	c := newClock(start)
	opts = append([]wechattest.Option{wechattest.WithClock(c.Now), wechattest.WithApp(testApp, testSecret)}, opts...)
	return wechattest.New(t, opts...), c
}

// reply is the union of every field the fake answers with.
type reply struct {
	Status      int      `json:"-"`
	Raw         string   `json:"-"`
	ErrCode     int      `json:"errcode"`
	ErrMsg      string   `json:"errmsg"`
	AccessToken string   `json:"access_token"`
	ExpiresIn   int      `json:"expires_in"`
	IPList      []string `json:"ip_list"`
	Ticket      string   `json:"ticket"`
}

// bodies collects every body a test received, to check that no secret was
// ever echoed.
var bodies struct {
	mu  sync.Mutex
	all []string
}

func do(t testing.TB, client *http.Client, req *http.Request) reply {
	t.Helper()
	r, err := doErr(client, req)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// doErr is do for goroutines other than the test's, which must not call
// t.Fatal.
func doErr(client *http.Client, req *http.Request) (reply, error) {
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return reply{}, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, fmt.Errorf("%s %s: read body: %w", req.Method, req.URL.Path, err)
	}
	bodies.mu.Lock()
	bodies.all = append(bodies.all, string(b))
	bodies.mu.Unlock()
	var r reply
	if err := json.Unmarshal(b, &r); err != nil {
		return reply{}, fmt.Errorf("%s %s: body is not JSON: %w: %q", req.Method, req.URL.Path, err, b)
	}
	r.Status, r.Raw = resp.StatusCode, string(b)
	return r, nil
}

func classicURL(base, appID, secret string) string {
	q := url.Values{"grant_type": {"client_credential"}, "appid": {appID}, "secret": {secret}}
	return base + "/cgi-bin/token?" + q.Encode()
}

func getURL(t testing.TB, rawURL string) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, nil, req)
}

func fetchClassic(t testing.TB, s *wechattest.Server) string {
	t.Helper()
	r := getURL(t, classicURL(s.URL(), testApp, testSecret))
	if r.ErrCode != 0 || r.AccessToken == "" {
		t.Fatalf("classic fetch: want a token, got %s", r.Raw)
	}
	return r.AccessToken
}

func postStable(t testing.TB, s *wechattest.Server, body string) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.URL()+"/cgi-bin/stable_token", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	return do(t, nil, req)
}

func stableBody(appID, secret string, force bool) string {
	b, _ := json.Marshal(map[string]any{"grant_type": "client_credential", "appid": appID, "secret": secret, "force_refresh": force})
	return string(b)
}

func fetchStable(t testing.TB, s *wechattest.Server, force bool) reply {
	t.Helper()
	r := postStable(t, s, stableBody(testApp, testSecret, force))
	if r.ErrCode != 0 || r.AccessToken == "" {
		t.Fatalf("stable fetch (force=%v): want a token, got %s", force, r.Raw)
	}
	return r
}

// business calls get_api_domain_ip and returns its errcode.
func business(t testing.TB, s *wechattest.Server, token string) int {
	t.Helper()
	r := getURL(t, s.URL()+"/cgi-bin/get_api_domain_ip?access_token="+url.QueryEscape(token))
	if r.ErrCode == 0 && (len(r.IPList) != 1 || r.IPList[0] != "127.0.0.1") {
		t.Fatalf("get_api_domain_ip: errcode 0 without ip_list [127.0.0.1]: %s", r.Raw)
	}
	return r.ErrCode
}
