package wechattest_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

func TestStableSameTokenThenNextTokenInLastWindow(t *testing.T) {
	s, c := newFake(t)
	first := fetchStable(t, s, false)
	if first.ExpiresIn != 7200 || len(first.AccessToken) < 100 {
		t.Fatalf("first stable token: %s", first.Raw)
	}
	c.Advance(time.Hour)
	again := fetchStable(t, s, false)
	if again.AccessToken != first.AccessToken || again.ExpiresIn != 3600 {
		t.Fatalf("an hour later: want the same token with expires_in 3600, got same=%v expires_in=%d",
			again.AccessToken == first.AccessToken, again.ExpiresIn)
	}
	c.Advance(time.Hour - 5*time.Minute - time.Second) // 301 s left: more than the grace
	if r := fetchStable(t, s, false); r.AccessToken != first.AccessToken || r.ExpiresIn != 301 {
		t.Fatalf("301 s left: want the same token with expires_in 301, got same=%v expires_in=%d",
			r.AccessToken == first.AccessToken, r.ExpiresIn)
	}
	c.Advance(time.Second) // 300 s left: the last window
	next := fetchStable(t, s, false)
	if next.AccessToken == first.AccessToken || next.ExpiresIn != 7200 {
		t.Fatalf("in the last window: want a new token with expires_in 7200, got same=%v expires_in=%d",
			next.AccessToken == first.AccessToken, next.ExpiresIn)
	}
	if r := fetchStable(t, s, false); r.AccessToken != next.AccessToken {
		t.Fatal("after the switch, callers must get the next token")
	}
	info, _ := s.TokenInfo(testApp, first.AccessToken)
	if !info.GraceEndsAt.IsZero() || !info.Stable {
		t.Fatalf("a stable token replaced in its last window keeps working to its expiry: %+v", info)
	}
	c.Advance(5*time.Minute - time.Second)
	if code := business(t, s, first.AccessToken); code != 0 {
		t.Fatalf("old stable token 1 s before its expiry: errcode %d, want 0", code)
	}
	c.Advance(time.Second)
	if code := business(t, s, first.AccessToken); code != 42001 {
		t.Fatalf("old stable token at its expiry: errcode %d, want 42001", code)
	}
	if st := s.Stats(testApp); st.Minted != 2 || st.QuotaUsed != 0 {
		t.Errorf("Stats = %+v, want Minted 2 and no classic quota used", st)
	}
	if s.CurrentStableToken(testApp) != next.AccessToken {
		t.Error("CurrentStableToken is not the newest stable token")
	}
}

func TestStableForceRefresh(t *testing.T) {
	s, c := newFake(t)
	a := fetchStable(t, s, false).AccessToken
	c.Advance(time.Minute)
	b := fetchStable(t, s, true)
	if b.AccessToken == a || b.ExpiresIn != 7200 {
		t.Fatalf("force_refresh: want a new token with expires_in 7200, got same=%v %d", b.AccessToken == a, b.ExpiresIn)
	}
	if r := fetchStable(t, s, false); r.AccessToken != b.AccessToken {
		t.Fatal("after a force refresh, normal calls must get the new token")
	}
	c.Advance(29 * time.Second)
	if r := fetchStable(t, s, true); r.AccessToken != b.AccessToken {
		t.Fatal("a second force refresh 29 s later must not refresh")
	}
	if got := s.Stats(testApp).Minted; got != 2 {
		t.Fatalf("Minted = %d, want 2", got)
	}
	// The replaced token gets the grace period.
	c.Advance(5*time.Minute - 29*time.Second - time.Second)
	if code := business(t, s, a); code != 0 {
		t.Fatalf("force-replaced token inside its grace: errcode %d, want 0", code)
	}
	c.Advance(time.Second)
	if code := business(t, s, a); code != 40001 {
		t.Fatalf("force-replaced token after its grace: errcode %d, want 40001", code)
	}
	c2 := fetchStable(t, s, true)
	if c2.AccessToken == b.AccessToken {
		t.Fatal("a force refresh 5 min after the previous one must refresh")
	}
}

func TestStableForceRefreshDailyLimit(t *testing.T) {
	s, c := newFake(t)
	seen := map[string]bool{}
	for i := range wechattest.StableForceDailyLimit {
		r := fetchStable(t, s, true)
		if seen[r.AccessToken] {
			t.Fatalf("force refresh %d returned an old token", i+1)
		}
		seen[r.AccessToken] = true
		c.Advance(wechattest.StableForceMinInterval)
	}
	r := postStable(t, s, stableBody(testApp, testSecret, true))
	if r.ErrCode != 45009 {
		t.Fatalf("force refresh 21 in a day: errcode %d, want 45009", r.ErrCode)
	}
	if r := fetchStable(t, s, false); !seen[r.AccessToken] {
		t.Fatal("normal calls keep working past the force limit")
	}
	c.Advance(14 * time.Hour) // past Beijing midnight
	if r := postStable(t, s, stableBody(testApp, testSecret, true)); r.ErrCode != 0 || seen[r.AccessToken] {
		t.Fatalf("force refresh the next Beijing day: %s", r.Raw)
	}
	if st := s.Stats(testApp); st.Minted != 21 || st.Refused != 1 {
		t.Errorf("Stats = %+v, want Minted 21, Refused 1", st)
	}
}

func TestStableAndClassicAreIndependent(t *testing.T) {
	s, c := newFake(t)
	stable := fetchStable(t, s, false).AccessToken
	classic := fetchClassic(t, s)
	if stable == classic {
		t.Fatal("stable and classic calls returned the same token")
	}
	fetchClassic(t, s)
	c.Advance(10 * time.Minute)
	if code := business(t, s, stable); code != 0 {
		t.Fatalf("stable token after classic fetches: errcode %d, want 0", code)
	}
	if code := business(t, s, classic); code != 40001 {
		t.Fatalf("replaced classic token: errcode %d, want 40001", code)
	}
	latest := s.CurrentToken(testApp)
	fetchStable(t, s, true)
	c.Advance(10 * time.Minute)
	if code := business(t, s, latest); code != 0 {
		t.Fatalf("classic token after a stable force refresh: errcode %d, want 0", code)
	}
	if s.CurrentToken(testApp) != latest {
		t.Fatal("a stable call changed the current classic token")
	}
}

func TestStableErrors(t *testing.T) {
	s, _ := newFake(t)
	cases := []struct {
		name, body string
		want       int
	}{
		{"wrong secret", stableBody(testApp, "wrong-"+testSecret, false), 40125},
		{"unknown appid", stableBody("wxnope", testSecret, false), 40013},
		{"missing appid", stableBody("", testSecret, false), 41002},
		{"missing secret", stableBody(testApp, "", false), 41004},
		{"wrong grant_type", `{"grant_type":"password","appid":"` + testApp + `","secret":"` + testSecret + `"}`, 40002},
		{"not JSON", `grant_type=client_credential&appid=` + testApp, 47001},
		{"truncated JSON", `{"grant_type":"client_credential","appid":"`, 47001},
		{"force_refresh not a bool", `{"grant_type":"client_credential","appid":"` + testApp + `","secret":"` + testSecret + `","force_refresh":"yes"}`, 47001},
	}
	for _, tc := range cases {
		r := postStable(t, s, tc.body)
		if r.Status != http.StatusOK || r.ErrCode != tc.want || r.AccessToken != "" {
			t.Errorf("%s: want HTTP 200 errcode %d, got %d %s", tc.name, tc.want, r.Status, r.Raw)
		}
		if strings.Contains(r.Raw, testSecret) {
			t.Errorf("%s: reply echoes the secret: %s", tc.name, r.Raw)
		}
	}
	if r := getURL(t, s.URL()+"/cgi-bin/stable_token?appid="+testApp); r.ErrCode != 43002 {
		t.Errorf("GET stable_token: errcode %d, want 43002", r.ErrCode)
	}
	if st := s.Stats(testApp); st.Minted != 0 {
		t.Errorf("refused stable calls minted: %+v", st)
	}
}
