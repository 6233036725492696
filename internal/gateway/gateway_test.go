package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

func TestTokenEndpointAnswersTheCachesTokenWithItsUsableLife(t *testing.T) {
	s := newSetup(t)
	rp := s.replica(nil)
	r := rp.token(t, app1, credA)
	tok := r.str("access_token")
	cur := s.up.fake.CurrentToken(app1)
	// The gateway's own token for credA, standing for WeChat's current one;
	// WeChat's never leaves the gateway.
	if r.status != 200 || tok == "" || tok != handleOf(credA, app1, cur) || strings.Contains(string(r.body), cur) {
		t.Fatalf("got %d %s, want the handle of the fake's current token", r.status, r.body)
	}
	cached, _ := rp.cache.Token(context.Background(), app1)
	exp := r.fields["expires_in"].(float64)
	if life := cached.ExpiresIn(time.Now()).Seconds(); exp <= 0 || exp > life+1 || exp < life-5 {
		t.Fatalf("expires_in %v, want the usable life left (%v s)", exp, life)
	}
	if again := rp.mustToken(t, app1, credA); again != tok {
		t.Fatal("a second fetch got another token: the gateway must serve the cache's token")
	}
	if other := rp.mustToken(t, app1, credAll); other == tok || other != handleOf(credAll, app1, cur) {
		t.Fatal("another credential got the same token: each credential's tokens must be its own")
	}
	if m := s.up.fake.Stats(app1).Minted; m != 1 {
		t.Fatalf("fake minted %d tokens, want 1 (served from the cache)", m)
	}
}

func TestTokenEndpointRefusesLikeWeChat(t *testing.T) {
	s := newSetup(t)
	rp := s.replica(nil)
	base := rp.srv.URL + "/cgi-bin/token?"
	for _, c := range []struct {
		name  string
		query string
		want  int
	}{
		{"wrong credential", "grant_type=client_credential&appid=wx1&secret=not-a-credential", 40125},
		{"credential of another app", "grant_type=client_credential&appid=wx1&secret=" + credB, 40125},
		{"real AppSecret while not accepted", "grant_type=client_credential&appid=wx1&secret=" + secret1, 40125},
		{"unknown appid", "grant_type=client_credential&appid=wx9&secret=" + credAll, 40013},
		{"no appid", "grant_type=client_credential&secret=" + credA, 41002},
		{"no secret", "grant_type=client_credential&appid=wx1", 41004},
		{"bad grant_type", "grant_type=password&appid=wx1&secret=" + credA, 40002},
	} {
		r := get(t, base+c.query)
		if r.status != 200 || r.errcode() != c.want || r.str("access_token") != "" || r.header.Get(HeaderGateway) == "" {
			t.Errorf("%s: got HTTP %d %s, want HTTP 200 errcode %d from the gateway", c.name, r.status, r.body, c.want)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, base+"grant_type=client_credential&appid=wx1&secret="+credA, nil)
	if r := do(t, req); r.errcode() != 43001 {
		t.Errorf("POST /cgi-bin/token: got %s, want 43001", r.body)
	}
	if n := s.up.fake.Stats("").Minted; n != 0 {
		t.Fatalf("refused calls minted %d tokens", n)
	}

	accepting := s.replica(func(c *Config) { c.AcceptAppSecret = true })
	tok := accepting.mustToken(t, app1, secret1)
	if tok == "" {
		t.Fatal("the real AppSecret is refused with AcceptAppSecret on")
	}
	call := func(rp *replica) reply {
		return get(t, rp.srv.URL+"/cgi-bin/get_api_domain_ip?access_token="+url.QueryEscape(tok))
	}
	if r := call(accepting); r.errcode() != 0 {
		t.Fatalf("a business call with the AppSecret caller's token: got %s", r.body)
	}
	// A replica that does not accept the AppSecret learns the token from
	// the ledger, and refuses it: that credential is not in force there.
	if r := call(s.replica(nil)); r.errcode() != 40001 || r.header.Get(HeaderGateway) != "revoked_credential" {
		t.Fatalf("the AppSecret caller's token where the AppSecret is not accepted: got %s", r.body)
	}
	if r := accepting.token(t, app1, secret2); r.errcode() != 40125 {
		t.Fatalf("another app's AppSecret: got %s, want 40125", r.body)
	}
}

func stableBody(app, secret string, force bool) string {
	f := "false"
	if force {
		f = "true"
	}
	return `{"grant_type":"client_credential","appid":"` + app + `","secret":"` + secret + `","force_refresh":` + f + `}`
}

func postJSON(t testing.TB, u, body string) reply {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	return do(t, req)
}

func TestStableTokenForceRefreshIsAVerifiedReportNeverSentUpstream(t *testing.T) {
	s := newSetup(t)
	rp := s.replica(nil)
	u := rp.srv.URL + "/cgi-bin/stable_token"
	first := postJSON(t, u, stableBody(app1, credA, false)).str("access_token")
	if first == "" || first != handleOf(credA, app1, s.up.fake.CurrentToken(app1)) {
		t.Fatal("stable_token did not answer the cache's token")
	}
	// A live token reported: WeChat is asked (a check, no mint) and the
	// token stays.
	if got := postJSON(t, u, stableBody(app1, credA, true)).str("access_token"); got != first {
		t.Fatal("force_refresh of a live token replaced it")
	}
	st := s.up.fake.Stats(app1)
	if st.Minted != 1 || st.Checks != 1 {
		t.Fatalf("after force_refresh of a live token: minted %d, checks %d; want 1 and 1", st.Minted, st.Checks)
	}
	// A dead token reported: one fetch, the new token answered.
	s.up.fake.Revoke(app1, s.up.fake.CurrentToken(app1))
	s.mr.FastForward(2 * time.Second) // the fleet trusts "alive" for a second
	second := postJSON(t, u, stableBody(app1, credA, true)).str("access_token")
	if second == "" || second == first || second != handleOf(credA, app1, s.up.fake.CurrentToken(app1)) {
		t.Fatal("force_refresh of a dead token did not give the new current token")
	}
	if s.up.fake.CurrentStableToken(app1) != "" {
		t.Fatal("the gateway called the stable_token endpoint upstream")
	}
	if r := postJSON(t, u, `{"appid":`); r.errcode() != 47001 {
		t.Fatalf("bad JSON: got %s, want 47001", r.body)
	}
	if r := get(t, u); r.errcode() != 43002 {
		t.Fatalf("GET stable_token: got %s, want 43002", r.body)
	}
	if r := postJSON(t, u, stableBody(app1, credB, false)); r.errcode() != 40125 {
		t.Fatalf("wrong credential: got %s, want 40125", r.body)
	}
}

func TestStaleTokenIsReplacedOnTheWay(t *testing.T) {
	s := newSetup(t)
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	rp := s.replica(func(c *Config) { c.Metrics = m })
	stale := rp.mustToken(t, app1, credA)
	_, fresh := s.rotate(t, rp, app1)
	r := get(t, rp.srv.URL+"/cgi-bin/get_api_domain_ip?access_token="+url.QueryEscape(stale))
	if r.errcode() != 0 || r.fields["ip_list"] == nil {
		t.Fatalf("a stale token handed out by the gateway: got %s, want the call to succeed", r.body)
	}
	calls := s.up.recorded()
	if len(calls) != 1 || calls[0].token != fresh {
		t.Fatalf("upstream saw %+v, want one call with the current token", calls)
	}
	if st := s.up.fake.Stats(app1); st.BusinessOK != 1 || st.BusinessSuperseded+st.BusinessExpired+st.BusinessInvalid != 0 {
		t.Fatalf("fake stats %+v: want 1 ok call and no dead one", st)
	}
	if got := testutil.ToFloat64(m.stale); got != 1 {
		t.Fatalf("stale_replaced_total = %v, want 1", got)
	}
	cur := rp.mustToken(t, app1, credA)
	if cur != handleOf(credA, app1, fresh) {
		t.Fatal("the gateway did not hand out the current token")
	}
	if r := get(t, rp.srv.URL+"/cgi-bin/get_api_domain_ip?access_token="+url.QueryEscape(cur)); r.errcode() != 0 {
		t.Fatalf("current token: %s", r.body)
	}
	if got := testutil.ToFloat64(m.stale); got != 1 {
		t.Fatalf("a call with the current token counted as stale (%v)", got)
	}
}

func TestUnknownTokenIsRefusedLocally(t *testing.T) {
	s := newSetup(t)
	rp := s.replica(nil)
	rp.mustToken(t, app1, credA)
	// A real token of the app, but not obtained through the gateway.
	direct := get(t, s.up.srv.URL+"/cgi-bin/token?grant_type=client_credential&appid=wx1&secret="+secret1).str("access_token")
	for _, tok := range []string{"junk", direct, strings.Repeat("x", 3000)} {
		for _, p := range []string{"/cgi-bin/get_api_domain_ip", "/wxa/getwxacode", "/datacube/getusersummary"} {
			r := get(t, rp.srv.URL+p+"?access_token="+url.QueryEscape(tok))
			if r.errcode() != 40001 || r.header.Get(HeaderGateway) != "unknown_token" {
				t.Fatalf("%s with an unknown token: got %s, want 40001 from the gateway", p, r.body)
			}
		}
	}
	if r := get(t, rp.srv.URL+"/cgi-bin/get_api_domain_ip"); r.errcode() != 41001 {
		t.Fatalf("no token: got %s, want 41001", r.body)
	}
	if calls := s.up.recorded(); len(calls) != 0 {
		t.Fatalf("unknown tokens reached upstream: %+v", calls)
	}
}

func TestUpstream40001IsReportedAndRetriedWithTheNewToken(t *testing.T) {
	s := newSetup(t)
	rp := s.replica(nil)
	handed := rp.mustToken(t, app1, credA)
	tok := s.up.fake.CurrentToken(app1)
	// WeChat kills the current token behind the cache's back.
	s.up.fake.Revoke(app1, tok)
	payload := bytes.Repeat([]byte("m"), 100<<10)
	req, _ := http.NewRequest(http.MethodPost, rp.srv.URL+"/cgi-bin/media/upload?type=image&access_token="+url.QueryEscape(handed), bytes.NewReader(payload))
	r := do(t, req)
	if r.errcode() != 0 || r.fields["size"].(float64) != float64(len(payload)) {
		t.Fatalf("got %s, want the upload to succeed on the retry with its whole body", r.body)
	}
	if !strings.Contains(r.header.Get(HeaderRetry), "retried") {
		t.Fatalf("%s: %q, want it to say the call was retried", HeaderRetry, r.header.Get(HeaderRetry))
	}
	calls := s.up.recorded()
	cur := s.up.fake.CurrentToken(app1)
	if len(calls) != 2 || calls[0].token != tok || calls[1].token != cur || cur == tok || calls[1].bodyLen != len(payload) {
		t.Fatalf("upstream calls %+v: want the dead token, then the new one with the same body", calls)
	}
	if m := s.up.fake.Stats(app1).Minted; m != 2 {
		t.Fatalf("minted %d, want 2 (one replacement)", m)
	}
}

func TestBodyOverTheRetryBufferIsStreamedAndNotRetried(t *testing.T) {
	s := newSetup(t)
	rp := s.replica(func(c *Config) { c.RetryBuffer = 1 << 10 })
	tok := rp.mustToken(t, app1, credA)
	s.up.fake.Revoke(app1, s.up.fake.CurrentToken(app1))
	payload := bytes.Repeat([]byte("b"), 8<<10)
	for _, chunked := range []bool{false, true} {
		var body = bytes.NewReader(payload)
		req, _ := http.NewRequest(http.MethodPost, rp.srv.URL+"/cgi-bin/media/upload?access_token="+url.QueryEscape(tok), body)
		if chunked {
			req.ContentLength = -1
			req.Body = io.NopCloser(struct{ *bytes.Reader }{bytes.NewReader(payload)})
		}
		r := do(t, req)
		if !strings.Contains(r.header.Get(HeaderRetry), "disabled") {
			t.Fatalf("chunked=%v: %s %q, want it to say the body was streamed and not retried", chunked, HeaderRetry, r.header.Get(HeaderRetry))
		}
		if !chunked && r.errcode() != 40001 {
			t.Fatalf("got %s, want WeChat's 40001 back (not retried)", r.body)
		}
		if chunked && r.errcode() != 0 {
			// The first call's report replaced the token: this one went out
			// with the new one.
			t.Fatalf("second upload: got %s, want success with the replacement", r.body)
		}
	}
	calls := s.up.recorded()
	if len(calls) != 2 || calls[0].bodyLen != len(payload) || calls[1].bodyLen != len(payload) || calls[0].token == calls[1].token {
		t.Fatalf("upstream calls %+v: want each body once, whole, the second with the new token", calls)
	}
}

func TestBodyOverMaxBodyIsRefused(t *testing.T) {
	s := newSetup(t)
	rp := s.replica(func(c *Config) { c.MaxBody, c.RetryBuffer = 4<<10, 1<<10 })
	tok := rp.mustToken(t, app1, credA)
	payload := bytes.Repeat([]byte("z"), 16<<10)
	req, _ := http.NewRequest(http.MethodPost, rp.srv.URL+"/cgi-bin/media/upload?access_token="+url.QueryEscape(tok), bytes.NewReader(payload))
	if r := do(t, req); r.errcode() != 45001 || r.header.Get(HeaderGateway) != "body_too_large" {
		t.Fatalf("declared length over max_body: got %s, want 45001", r.body)
	}
	if n := len(s.up.recorded()); n != 0 {
		t.Fatalf("a body over max_body by its Content-Length reached upstream (%d calls)", n)
	}
	req, _ = http.NewRequest(http.MethodPost, rp.srv.URL+"/cgi-bin/media/upload?access_token="+url.QueryEscape(tok), struct{ *bytes.Reader }{bytes.NewReader(payload)})
	req.ContentLength = -1
	if r := do(t, req); r.errcode() != 45001 {
		t.Fatalf("chunked body over max_body: got %s, want 45001", r.body)
	}
	for _, c := range s.up.recorded() {
		if c.bodyLen > 4<<10 {
			t.Fatalf("upstream received %d bytes, over max_body", c.bodyLen)
		}
	}
}

func TestMediaDownloadStreamsThrough(t *testing.T) {
	s := newSetup(t)
	rp := s.replica(func(c *Config) { c.RetryBuffer = 1 << 10 })
	tok := rp.mustToken(t, app1, credA)
	const size = 5<<20 + 123
	r := get(t, rp.srv.URL+"/cgi-bin/media/get?size=5243003&media_id=x&access_token="+url.QueryEscape(tok))
	if r.status != 200 || len(r.body) != size || r.header.Get("Content-Type") != "image/jpeg" {
		t.Fatalf("download: HTTP %d, %d bytes, %q; want %d bytes of image/jpeg", r.status, len(r.body), r.header.Get("Content-Type"), size)
	}
	for i := 0; i < len(r.body); i += 4099 {
		if r.body[i] != byte(i%(64<<10)) {
			t.Fatalf("byte %d differs", i)
		}
	}
}

func TestRedirectIsPassedBackNotFollowed(t *testing.T) {
	s := newSetup(t)
	rp := s.replica(nil)
	tok := rp.mustToken(t, app1, credA)
	r := get(t, rp.srv.URL+"/cgi-bin/redirect?access_token="+url.QueryEscape(tok))
	if r.status != http.StatusFound {
		t.Fatalf("got HTTP %d, want the 302 passed back", r.status)
	}
	if n := s.up.hitsElsewhere(); n != 0 {
		t.Fatalf("the redirect target got %d requests: the gateway followed a redirect with a token", n)
	}
}

func TestHopByHopHeadersAndTheCallersCredentialAreNotForwarded(t *testing.T) {
	s := newSetup(t)
	rp := s.replica(nil)
	tok := rp.mustToken(t, app1, credA)
	req, _ := http.NewRequest(http.MethodGet, rp.srv.URL+"/cgi-bin/hop?access_token="+url.QueryEscape(tok), nil)
	req.Header.Set("Connection", "X-Hop-Secret")
	req.Header.Set("X-Hop-Secret", "1")
	req.Header.Set("Proxy-Authorization", "Basic Zm9vOmJhcg==")
	req.Header.Set("Authorization", "Bearer "+credA)
	req.Header.Set("X-End-To-End", "yes")
	// Not forwarded either: a compressed reply could not be read for its errcode.
	req.Header.Set("Accept-Encoding", "gzip, br")
	req.Host = "evil.example" // the caller cannot choose where the gateway sends
	r := do(t, req)
	if r.errcode() != 0 {
		t.Fatalf("got %s", r.body)
	}
	calls := s.up.recorded()
	if len(calls) != 1 {
		t.Fatalf("upstream calls %+v, want 1", calls)
	}
	h := calls[0].header
	for _, k := range []string{"X-Hop-Secret", "Proxy-Authorization", "Authorization"} {
		if h.Get(k) != "" {
			t.Errorf("%s was forwarded", k)
		}
	}
	if h.Get("X-End-To-End") != "yes" {
		t.Error("an end-to-end header was dropped")
	}
	if v := h.Get("Accept-Encoding"); v != "" {
		t.Errorf("Accept-Encoding %q was forwarded", v)
	}
	if want := strings.TrimPrefix(s.up.srv.URL, "http://"); calls[0].host != want {
		t.Errorf("upstream saw Host %q, want %q", calls[0].host, want)
	}
	if r.header.Get("X-Private") != "" || r.header.Get("Keep-Alive") != "" || r.header.Get("X-End-To-End") != "kept" {
		t.Errorf("reply headers %v: want hop-by-hop ones dropped, end-to-end kept", r.header)
	}
}

func TestBearerCallsGetTheTokenInjected(t *testing.T) {
	s := newSetup(t)
	rp := s.replica(nil)
	call := func(app, key string) reply {
		req, _ := http.NewRequest(http.MethodGet, rp.srv.URL+"/apps/"+app+"/cgi-bin/get_api_domain_ip?access_token=ignored", nil)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		return do(t, req)
	}
	if r := call(app1, credA); r.errcode() != 0 || r.fields["ip_list"] == nil {
		t.Fatalf("bearer call: got %s", r.body)
	}
	calls := s.up.recorded()
	if len(calls) != 1 || calls[0].token != s.up.fake.CurrentToken(app1) || calls[0].header.Get("Authorization") != "" || calls[0].path != wechat.EndpointDomainIP {
		t.Fatalf("upstream calls %+v: want the path without /apps/wx1, the current token, no Authorization", calls)
	}
	for _, c := range []struct {
		app, key string
		want     int
	}{{app1, credB, 40125}, {app1, "nope", 40125}, {app1, "", 41004}, {"wx9", credAll, 40013}} {
		if r := call(c.app, c.key); r.errcode() != c.want {
			t.Errorf("app %s key %q: got %s, want %d", c.app, c.key, r.body, c.want)
		}
	}
	if r := get(t, rp.srv.URL+"/apps/wx1/not-an-api"); r.errcode() != 40066 {
		t.Errorf("bearer call outside the API prefixes: got %s, want 40066", r.body)
	}
	if n := len(s.up.recorded()); n != 1 {
		t.Fatalf("refused bearer calls reached upstream (%d calls)", n)
	}
}

// standInTickets is the ticket cache as the gateway sees it.
type standInTickets struct {
	mu    sync.Mutex
	calls []string
}

func (s *standInTickets) Ticket(_ context.Context, appID, kind string) (tokencache.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, appID+"/"+kind)
	if appID == app2 {
		return tokencache.Token{}, errors.New("no ticket")
	}
	return tokencache.Token{Value: "ticket-" + appID + "-" + kind, UsableUntil: time.Now().Add(time.Hour)}, nil
}

func TestGetTicketIsServedFromTheTicketCache(t *testing.T) {
	s := newSetup(t)
	tickets := &standInTickets{}
	rp := s.replica(func(c *Config) { c.Tickets = tickets })
	tok := rp.mustToken(t, app1, credA)
	for _, kind := range []string{"jsapi", "wx_card"} {
		r := get(t, rp.srv.URL+"/cgi-bin/ticket/getticket?type="+kind+"&access_token="+url.QueryEscape(tok))
		if r.errcode() != 0 || r.str("ticket") != "ticket-wx1-"+kind || r.fields["expires_in"].(float64) < 3500 {
			t.Fatalf("%s: got %s", kind, r.body)
		}
	}
	if r := get(t, rp.srv.URL+"/cgi-bin/ticket/getticket?type=other&access_token="+url.QueryEscape(tok)); r.errcode() != 40097 {
		t.Fatalf("bad type: got %s, want 40097", r.body)
	}
	if r := get(t, rp.srv.URL+"/cgi-bin/ticket/getticket?type=jsapi&access_token=junk"); r.errcode() != 40001 {
		t.Fatalf("unknown token: got %s, want 40001", r.body)
	}
	tok2 := rp.mustToken(t, app2, credB)
	if r := get(t, rp.srv.URL+"/cgi-bin/ticket/getticket?type=jsapi&access_token="+url.QueryEscape(tok2)); r.errcode() != -1 {
		t.Fatalf("ticket cache failure: got %s, want -1", r.body)
	}
	if len(tickets.calls) != 3 || len(s.up.recorded()) != 0 {
		t.Fatalf("ticket calls %v, upstream calls %d: want 3 and 0", tickets.calls, len(s.up.recorded()))
	}
	// Without a ticket cache, getticket is relayed like any business call.
	plain := s.replica(nil)
	tok = plain.mustToken(t, app1, credA)
	if r := get(t, plain.srv.URL+"/cgi-bin/ticket/getticket?type=jsapi&access_token="+url.QueryEscape(tok)); r.errcode() != 0 || r.str("ticket") == "" {
		t.Fatalf("relayed getticket: got %s", r.body)
	}
	if calls := s.up.recorded(); len(calls) != 1 || calls[0].path != "/cgi-bin/ticket/getticket" {
		t.Fatalf("upstream calls %+v, want the relayed getticket", calls)
	}
}

func TestTokenPathsAreNeverRelayed(t *testing.T) {
	s := newSetup(t)
	rp := s.replica(nil)
	tok := rp.mustToken(t, app1, credA)
	for _, p := range []string{"/cgi-bin/token/", "/cgi-bin/stable_token/", "/apps/wx1/cgi-bin/token", "/apps/wx1/cgi-bin/stable_token/", "/cgi-bin//x", "/cgi-bin/../sns/x", "/sns/userinfo"} {
		req, _ := http.NewRequest(http.MethodGet, rp.srv.URL+p+"?grant_type=client_credential&appid=wx1&secret="+secret1+"&access_token="+url.QueryEscape(tok), nil)
		req.URL.Path = p // keep the dots and double slashes
		req.Header.Set("Authorization", "Bearer "+credA)
		if r := do(t, req); r.errcode() != 40066 {
			t.Errorf("%s: got %s, want 40066 from the gateway", p, r.body)
		}
	}
	if n := len(s.up.recorded()); n != 0 || s.up.fake.Stats(app1).Minted != 1 {
		t.Fatalf("%d calls relayed, %d minted: want none relayed, 1 minted", n, s.up.fake.Stats(app1).Minted)
	}
}

func TestTokensHandedOutByOneReplicaAreHonouredByAnother(t *testing.T) {
	s := newSetup(t)
	one, two := s.replica(nil), s.replica(nil)
	tok := one.mustToken(t, app1, credA)
	first := s.up.fake.CurrentToken(app1)
	if r := get(t, two.srv.URL+"/cgi-bin/get_api_domain_ip?access_token="+url.QueryEscape(tok)); r.errcode() != 0 {
		t.Fatalf("replica 2, current token from replica 1: got %s", r.body)
	}
	// An earlier token, from before a rotation that replica 2 saw.
	s.rotate(t, one, app1)
	three := s.replica(nil)
	if r := get(t, three.srv.URL+"/cgi-bin/get_api_domain_ip?access_token="+url.QueryEscape(tok)); r.errcode() != 0 {
		t.Fatalf("a new replica, superseded token from replica 1: got %s", r.body)
	}
	for _, c := range s.up.recorded() {
		if c.token != s.up.fake.CurrentToken(app1) && c.token != first {
			t.Fatalf("upstream got a token the cache never held")
		}
	}
	if st := s.up.fake.Stats(app1); st.BusinessSuperseded != 0 || st.BusinessOK != 2 {
		t.Fatalf("fake stats %+v: want 2 ok calls, none dead", st)
	}

	// Without a shared ledger, replica 2 knows only its own.
	lone := s.replica(func(c *Config) { c.Ledger = nil })
	if r := get(t, lone.srv.URL+"/cgi-bin/get_api_domain_ip?access_token="+url.QueryEscape(tok)); r.errcode() != 40001 {
		t.Fatalf("no ledger: got %s, want 40001 (the SDK refetches here)", r.body)
	}
}

func TestTokenIsHonouredOnlyUntilItsUsableEndPlusGrace(t *testing.T) {
	s := newSetup(t)
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	rp := s.replica(func(c *Config) { c.Clock, c.Ledger, c.HonourGrace = clock, nil, time.Minute })
	tok := rp.mustToken(t, app1, credA)
	cur, _ := rp.cache.Token(context.Background(), app1)
	mu.Lock()
	now = cur.UsableUntil.Add(time.Minute - time.Second)
	mu.Unlock()
	if r := get(t, rp.srv.URL+"/cgi-bin/get_api_domain_ip?access_token="+url.QueryEscape(tok)); r.errcode() != 0 {
		t.Fatalf("inside the grace: got %s", r.body)
	}
	mu.Lock()
	now = cur.UsableUntil.Add(time.Minute)
	mu.Unlock()
	if r := get(t, rp.srv.URL+"/cgi-bin/get_api_domain_ip?access_token="+url.QueryEscape(tok)); r.errcode() != 40001 {
		t.Fatalf("past usable end + grace: got %s, want 40001", r.body)
	}
}

func TestConcurrencyLimitAndTimeoutAnswerInWeChatsShape(t *testing.T) {
	s := newSetup(t)
	rp := s.replica(func(c *Config) { c.MaxConcurrent = 1 })
	tok := rp.mustToken(t, app1, credA)
	done := make(chan reply)
	go func() { done <- get(t, rp.srv.URL+"/cgi-bin/slow?access_token="+url.QueryEscape(tok)) }()
	// Wait until the slow call holds the only slot: it reached upstream.
	<-s.up.arrived
	if r := rp.token(t, app1, credA); r.errcode() != -1 || r.header.Get(HeaderGateway) != "busy" {
		t.Fatalf("over max_concurrent: got %s, want -1 busy", r.body)
	}
	close(s.up.block)
	if r := <-done; r.errcode() != 0 {
		t.Fatalf("slow call: got %s", r.body)
	}

	timed := s.replica(func(c *Config) { c.Timeout = 200 * time.Millisecond })
	s.up.block = make(chan struct{}) // never closed: the call must time out
	tok = timed.mustToken(t, app1, credA)
	if r := get(t, timed.srv.URL+"/cgi-bin/slow?access_token="+url.QueryEscape(tok)); r.errcode() != -1 || r.header.Get(HeaderGateway) != "timeout" {
		t.Fatalf("over the timeout: got %s, want -1 timeout", r.body)
	}
}

func TestSNSGetsTheRealSecretWhichNeverComesBack(t *testing.T) {
	s := newSetup(t)
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	rp := s.replica(func(c *Config) { c.Metrics = m })
	var replies []reply
	for _, c := range []struct{ path, code string }{{"/sns/oauth2/access_token", "code"}, {"/sns/jscode2session", "js_code"}} {
		r := get(t, rp.srv.URL+c.path+"?appid=wx1&secret="+credA+"&"+c.code+"=abc&grant_type=authorization_code")
		if r.str("openid") != "o-abc" {
			t.Fatalf("%s: got %s, want the upstream's answer to the real secret", c.path, r.body)
		}
		replies = append(replies, r)
		if r := get(t, rp.srv.URL+c.path+"?appid=wx1&secret="+credB+"&"+c.code+"=abc"); r.errcode() != 40125 {
			t.Fatalf("%s with another app's credential: got %s, want 40125", c.path, r.body)
		}
		replies = append(replies, r)
	}
	if n := len(s.up.recorded()); n != 2 {
		t.Fatalf("upstream got %d login calls, want 2 (refused credentials are not forwarded)", n)
	}
	var metricsText bytes.Buffer
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		metricsText.WriteString(mf.String())
	}
	for _, r := range replies {
		var hdr bytes.Buffer
		_ = r.header.Write(&hdr)
		for _, where := range []string{string(r.body), hdr.String()} {
			assertNoSecret(t, where, secret1)
		}
	}
	assertNoSecret(t, rp.logs.String(), secret1)
	assertNoSecret(t, metricsText.String(), secret1)
	for _, secret := range []string{credA, credB} {
		assertNoSecret(t, rp.logs.String(), secret)
		assertNoSecret(t, metricsText.String(), secret)
	}
}

func assertNoSecret(t *testing.T, s, secret string) {
	t.Helper()
	if strings.Contains(s, secret) || strings.Contains(s, url.QueryEscape(secret)) {
		t.Fatalf("a secret leaked into:\n%s", s)
	}
}

func TestLogsAndMetricsHoldOnlyFingerprints(t *testing.T) {
	s := newSetup(t)
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	rp := s.replica(func(c *Config) { c.Metrics = m })
	tok := rp.mustToken(t, app1, credA)
	wechatTok := s.up.fake.CurrentToken(app1)
	s.up.fake.Revoke(app1, wechatTok)
	get(t, rp.srv.URL+"/cgi-bin/get_api_domain_ip?access_token="+url.QueryEscape(tok)) // refused, retried
	get(t, rp.srv.URL+"/cgi-bin/get_api_domain_ip?access_token=junk-token-value")
	rp.token(t, app1, "wrong-credential-value")
	fresh := s.up.fake.CurrentToken(app1)
	logs := rp.logs.String()
	for _, v := range []string{tok, wechatTok, fresh, credA, secret1, "junk-token-value", "wrong-credential-value"} {
		assertNoSecret(t, logs, v)
	}
	if !strings.Contains(logs, wechat.Fingerprint(tok)) || !strings.Contains(logs, "credential=team-a") {
		t.Fatalf("the access log should name tokens by fingerprint and credentials by name:\n%s", logs)
	}
	if got := testutil.ToFloat64(m.requests.WithLabelValues(ClassBusiness, "0", RetryDone)); got != 1 {
		t.Fatalf("requests{business,0,retried} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.requests.WithLabelValues(ClassBusiness, "40001", RetryNone)); got != 1 {
		t.Fatalf("requests{business,40001,none} = %v, want 1 (the unknown token)", got)
	}
	if got := testutil.ToFloat64(m.requests.WithLabelValues(ClassToken, "40125", RetryNone)); got != 1 {
		t.Fatalf("requests{token,40125,none} = %v, want 1", got)
	}
}

func TestNewRefusesABadConfig(t *testing.T) {
	s := newSetup(t)
	rp := s.replica(nil)
	for name, c := range map[string]Config{
		"no tokens":           {Apps: []App{{ID: app1}}, Credentials: []Credential{{Name: "a", Key: credA, Apps: []string{app1}}}, UpstreamURL: "http://127.0.0.1:1"},
		"bad upstream":        {Tokens: rp.cache, Apps: []App{{ID: app1}}, Credentials: []Credential{{Name: "a", Key: credA, Apps: []string{app1}}}, UpstreamURL: "ftp://x"},
		"password in url":     {Tokens: rp.cache, Apps: []App{{ID: app1}}, Credentials: []Credential{{Name: "a", Key: credA, Apps: []string{app1}}}, UpstreamURL: "http://u:hunter2@127.0.0.1:1"},
		"no credential":       {Tokens: rp.cache, Apps: []App{{ID: app1}}, UpstreamURL: "http://127.0.0.1:1"},
		"unknown app":         {Tokens: rp.cache, Apps: []App{{ID: app1}}, Credentials: []Credential{{Name: "a", Key: credA, Apps: []string{"wx9"}}}, UpstreamURL: "http://127.0.0.1:1"},
		"credential = secret": {Tokens: rp.cache, Apps: []App{{ID: app1, Secret: secret1}}, Credentials: []Credential{{Name: "a", Key: secret1, Apps: []string{app1}}}, UpstreamURL: "http://127.0.0.1:1"},
		"retry over max":      {Tokens: rp.cache, Apps: []App{{ID: app1}}, Credentials: []Credential{{Name: "a", Key: credA, Apps: []string{app1}}}, UpstreamURL: "http://127.0.0.1:1", MaxBody: 10, RetryBuffer: 20},
	} {
		_, err := New(c)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		for _, secret := range []string{"hunter2", secret1, credA} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("%s: the error shows a secret: %v", name, err)
			}
		}
	}
}

func TestQueryRewriteDropsEveryFormOfTheParameter(t *testing.T) {
	got := withToken("a=1&access_token=old&b=x%20y&access%5Ftoken=enc&&access_token&c", "new/+")
	if want := "a=1&b=x%20y&c&access_token=new%2F%2B"; got != want {
		t.Fatalf("withToken: %q, want %q", got, want)
	}
	if tok, ok := queryToken("x=1&access%5ftoken=abc%2B&access_token=second"); !ok || tok != "abc+" {
		t.Fatalf("queryToken: %q %v, want the first, decoded", tok, ok)
	}
	if _, ok := queryToken("access_tokens=1&xaccess_token=2"); ok {
		t.Fatal("queryToken matched another parameter")
	}
}

// brokenLedger is a Ledger whose Redis is down.
type brokenLedger struct{ records, finds int }

func (l *brokenLedger) Record(context.Context, string, HandedOut) error {
	l.records++
	return errors.New("redis: connection refused")
}

func (l *brokenLedger) Find(context.Context, string) (HandedOut, bool, error) {
	l.finds++
	return HandedOut{}, false, errors.New("redis: connection refused")
}

func TestALedgerOutageCostsARoundTripNeverADeadCall(t *testing.T) {
	s := newSetup(t)
	l1, l2 := &brokenLedger{}, &brokenLedger{}
	one := s.replica(func(c *Config) { c.Ledger = l1 })
	two := s.replica(func(c *Config) { c.Ledger = l2 })
	tok := one.mustToken(t, app1, credA)
	if l1.records != 1 {
		t.Fatalf("the ledger was asked to record %d times, want 1", l1.records)
	}
	if r := get(t, one.srv.URL+"/cgi-bin/get_api_domain_ip?access_token="+url.QueryEscape(tok)); r.errcode() != 0 {
		t.Fatalf("the replica that handed the token out: got %s", r.body)
	}
	// The other replica cannot learn it: 40001, and the SDK fetches there.
	if r := get(t, two.srv.URL+"/cgi-bin/get_api_domain_ip?access_token="+url.QueryEscape(tok)); r.errcode() != 40001 || l2.finds != 1 {
		t.Fatalf("another replica during a ledger outage: got %s (finds %d), want 40001 after one lookup", r.body, l2.finds)
	}
	again := two.mustToken(t, app1, credA)
	if r := get(t, two.srv.URL+"/cgi-bin/get_api_domain_ip?access_token="+url.QueryEscape(again)); r.errcode() != 0 {
		t.Fatalf("after fetching there: got %s", r.body)
	}
	if st := s.up.fake.Stats(app1); st.BusinessSuperseded+st.BusinessExpired+st.BusinessInvalid != 0 || st.BusinessOK != 2 {
		t.Fatalf("fake stats %+v: want 2 ok calls and no dead one", st)
	}
	// A failed record is retried at the next hand-out.
	one.mustToken(t, app1, credA)
	if l1.records != 2 {
		t.Fatalf("records %d, want the failed one retried", l1.records)
	}
}

func TestKnownTokensStayBounded(t *testing.T) {
	k := newKnown(8, time.Minute, nil, slog.New(slog.DiscardHandler))
	now := time.Now()
	ctx := context.Background()
	for i := range 100 {
		h := fmt.Sprintf("tkgw_token-%d", i)
		k.remember(ctx, app1, "a", h, tokencache.Token{Value: "wechat", UsableUntil: now.Add(time.Hour)}, now)
		if len(k.m) > 8 {
			t.Fatalf("%d entries after %d hand-outs, want at most 8", len(k.m), i+1)
		}
		if got, ok, _ := k.lookup(ctx, h, now); !ok || got.App != app1 || got.Credential != "a" {
			t.Fatalf("the token just handed out is not recognised: %+v %v", got, ok)
		}
	}
	// Expired entries go first.
	k = newKnown(4, 0, nil, slog.New(slog.DiscardHandler))
	for i := range 3 {
		k.remember(ctx, app1, "a", fmt.Sprint("old-", i), tokencache.Token{UsableUntil: now.Add(-time.Second)}, now)
	}
	k.remember(ctx, app1, "a", "live", tokencache.Token{UsableUntil: now.Add(time.Hour)}, now)
	k.remember(ctx, app1, "a", "live2", tokencache.Token{UsableUntil: now.Add(time.Hour)}, now)
	for _, v := range []string{"live", "live2"} {
		if _, ok, _ := k.lookup(ctx, v, now); !ok {
			t.Fatalf("%s was evicted while expired entries were kept", v)
		}
	}
}

func TestForceRefreshFloodCostsNoMint(t *testing.T) {
	s := newSetup(t)
	rp := s.replica(nil)
	u := rp.srv.URL + "/cgi-bin/stable_token"
	first := postJSON(t, u, stableBody(app1, credA, false)).str("access_token")
	// A hostile but authenticated client forces again and again.
	for range 50 {
		if got := postJSON(t, u, stableBody(app1, credA, true)).str("access_token"); got != first {
			t.Fatal("a forced refresh of a live token replaced it")
		}
	}
	st := s.up.fake.Stats(app1)
	if st.Minted != 1 || st.Checks > 1 {
		t.Fatalf("50 forced refreshes of a live token: minted %d, checks %d; want 1 mint and at most 1 check (the verdict is shared)", st.Minted, st.Checks)
	}
}

// Revoking a credential (SetCredentials, which a reload calls) cuts off
// the tokens it already holds on every replica that has the new list, at
// once: each credential's tokens are its own, so the others keep working.
func TestRevokingACredentialCutsOffTheTokensItHolds(t *testing.T) {
	s := newSetup(t)
	one, two := s.replica(nil), s.replica(nil)
	a := one.mustToken(t, app1, credA)
	all := one.mustToken(t, app1, credAll)
	call := func(rp *replica, tok string) reply {
		return get(t, rp.srv.URL+"/cgi-bin/get_api_domain_ip?access_token="+url.QueryEscape(tok))
	}
	for _, rp := range []*replica{one, two} {
		if call(rp, a).errcode() != 0 || call(rp, all).errcode() != 0 {
			t.Fatal("the tokens of both credentials should work before the revocation")
		}
	}
	before := len(s.up.recorded())
	keep := []Credential{{Name: "ops", Key: credAll, Apps: []string{"*"}}, {Name: "team-b", Key: credB, Apps: []string{app2}}}
	for _, rp := range []*replica{one, two} {
		if err := rp.gw.SetCredentials(keep); err != nil {
			t.Fatal(err)
		}
		if r := call(rp, a); r.errcode() != 40001 || r.header.Get(HeaderGateway) != "revoked_credential" {
			t.Fatalf("the revoked credential's token: got %s (%s), want 40001 from the gateway", r.body, r.header.Get(HeaderGateway))
		}
		if r := call(rp, all); r.errcode() != 0 {
			t.Fatalf("another credential's token after the revocation: got %s", r.body)
		}
		if r := rp.token(t, app1, credA); r.errcode() != 40125 {
			t.Fatalf("a token fetch with the revoked credential: got %s, want 40125", r.body)
		}
	}
	if n := len(s.up.recorded()) - before; n != 2 {
		t.Fatalf("%d calls relayed after the revocation, want 2 (the other credential's): the revoked token was forwarded", n)
	}
	// Narrowing a credential's apps cuts its tokens for the apps it lost.
	if err := one.gw.SetCredentials([]Credential{{Name: "ops", Key: credAll, Apps: []string{app2}}}); err != nil {
		t.Fatal(err)
	}
	if r := call(one, all); r.errcode() != 40001 || r.header.Get(HeaderGateway) != "revoked_credential" {
		t.Fatalf("a credential no longer allowed the app: got %s", r.body)
	}
	// A bad list changes nothing.
	if err := one.gw.SetCredentials([]Credential{{Name: "x", Key: credAll, Apps: []string{"wxnotconfigured00"}}}); err == nil || strings.Contains(err.Error(), credAll) {
		t.Fatalf("SetCredentials of an unknown app: err %v, want a refusal that does not quote the key", err)
	}
	if err := one.gw.SetCredentials(nil); err == nil {
		t.Fatal("SetCredentials(nil) with the AppSecret not accepted: nobody could authenticate, yet it was accepted")
	}
	if r := call(one, all); r.errcode() != 40001 {
		t.Fatalf("a refused SetCredentials changed the credentials: %s", r.body)
	}
	// A token of the right shape that no replica handed out is unknown.
	if r := call(two, handleOf("not-a-credential-of-this-gateway", app1, s.up.fake.CurrentToken(app1))); r.errcode() != 40001 || r.header.Get(HeaderGateway) != "unknown_token" {
		t.Fatalf("a forged token: got %s", r.body)
	}
}

// The token the gateway hands out is its own: WeChat's never leaves it,
// neither in the token reply nor through the Ledger (which holds hashes).
func TestWeChatsTokenNeverLeavesTheGateway(t *testing.T) {
	s := newSetup(t)
	rp := s.replica(nil)
	r := rp.token(t, app1, credA)
	st := postJSON(t, rp.srv.URL+"/cgi-bin/stable_token", stableBody(app1, credA, false))
	cur := s.up.fake.CurrentToken(app1)
	for _, body := range [][]byte{r.body, st.body} {
		if strings.Contains(string(body), cur) {
			t.Fatalf("a token reply carries WeChat's token: %s", body)
		}
	}
	for _, k := range s.mr.Keys() {
		if v, err := s.mr.Get(k); err == nil && strings.Contains(v, r.str("access_token")) {
			t.Fatalf("Redis key %s holds the handed-out token itself", k)
		}
	}
}
