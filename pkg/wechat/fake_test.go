package wechat_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

// fakeClock is a settable clock shared by the fake and the client.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// newFake starts a fake WeChat knowing testAppID and a client pointed at it,
// both on clock. Each client gets its own transport so that no test
// inherits another's keep-alive connections.
func newFake(t *testing.T, clock *fakeClock, opts ...wechattest.Option) (*wechattest.Server, *wechat.Client) {
	t.Helper()
	opts = append([]wechattest.Option{wechattest.WithApp(testAppID, testSecret.Reveal()), wechattest.WithClock(clock.Now)}, opts...)
	fake := wechattest.New(t, opts...)
	return fake, newClientFor(t, fake.URL(), clock)
}

func newClientFor(t *testing.T, url string, clock *fakeClock) *wechat.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return wechat.NewClient(wechat.WithBaseURL(url), wechat.WithClock(clock.Now),
		wechat.WithHTTPClient(&http.Client{Transport: tr, Timeout: 10 * time.Second}))
}

// businessCall calls a business API of the fake with token and checks the
// reply with CheckBusinessReply, as the passive-refresh path does.
func businessCall(t *testing.T, fake *wechattest.Server, token string) error {
	t.Helper()
	resp, err := http.Get(fake.URL() + "/cgi-bin/get_api_domain_ip?access_token=" + token)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return wechat.CheckBusinessReply("/cgi-bin/get_api_domain_ip", body)
}

func TestFakeClassicLifecycle(t *testing.T) {
	clock := &fakeClock{now: t0}
	fake, c := newFake(t, clock)
	ctx := context.Background()

	first, err := c.ClassicToken(ctx, testAppID, testSecret)
	if err != nil {
		t.Fatal(err)
	}
	if first.Value != fake.CurrentToken(testAppID) || first.ExpiresIn != 7200*time.Second || !first.FetchedAt.Equal(t0) {
		t.Fatalf("first token %v does not match the fake's current token (%s), 7200 s, fetched at t0",
			first, wechat.Fingerprint(fake.CurrentToken(testAppID)))
	}
	if err := businessCall(t, fake, first.Value); err != nil {
		t.Fatalf("business call with a fresh token: %v", err)
	}

	clock.Advance(time.Minute)
	second, err := c.ClassicToken(ctx, testAppID, testSecret)
	if err != nil {
		t.Fatal(err)
	}
	if second.Value == first.Value || !second.FetchedAt.Equal(t0.Add(time.Minute)) {
		t.Fatalf("second classic fetch: %v, want a new token fetched at t0+1m", second)
	}
	// Inside the 5-minute overlap both work; after it the first is dead.
	if err := businessCall(t, fake, first.Value); err != nil {
		t.Errorf("old token inside the overlap: %v", err)
	}
	clock.Advance(5*time.Minute + time.Second)
	err = businessCall(t, fake, first.Value)
	checkClass(t, err, "/cgi-bin/get_api_domain_ip", 40001, wechat.ErrTokenInvalid)
	if err := businessCall(t, fake, second.Value); err != nil {
		t.Errorf("current token: %v", err)
	}
	checkClass(t, businessCall(t, fake, "NEVER_MINTED"), "/cgi-bin/get_api_domain_ip", 40014, wechat.ErrTokenInvalid)
	clock.Advance(2 * time.Hour)
	checkClass(t, businessCall(t, fake, second.Value), "/cgi-bin/get_api_domain_ip", 42001, wechat.ErrTokenInvalid)

	if st := fake.Stats(testAppID); st.Minted != 2 || st.QuotaUsed != 2 {
		t.Errorf("fake stats %+v, want 2 minted, 2 quota used", st)
	}
}

func TestFakeStable(t *testing.T) {
	clock := &fakeClock{now: t0}
	fake, c := newFake(t, clock)
	ctx := context.Background()

	a, err := c.StableToken(ctx, testAppID, testSecret, false)
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(10 * time.Minute)
	b, err := c.StableToken(ctx, testAppID, testSecret, false)
	if err != nil {
		t.Fatal(err)
	}
	if a.Value != b.Value || a.Value != fake.CurrentStableToken(testAppID) {
		t.Fatalf("normal stable calls returned different tokens")
	}
	if b.ExpiresIn != 7200*time.Second-10*time.Minute || !b.FetchedAt.Equal(t0.Add(10*time.Minute)) {
		t.Errorf("second stable token: %v, want expires_in counting down to 6600 s", b)
	}
	forced, err := c.StableToken(ctx, testAppID, testSecret, true)
	if err != nil {
		t.Fatal(err)
	}
	if forced.Value == a.Value || forced.Value != fake.CurrentStableToken(testAppID) {
		t.Errorf("force_refresh did not mint a new token")
	}
	if st := fake.Stats(testAppID); st.Minted != 2 || st.QuotaUsed != 0 {
		t.Errorf("fake stats %+v, want 2 minted and no classic quota used", st)
	}
	if fake.CurrentToken(testAppID) != "" {
		t.Errorf("stable calls minted a classic token")
	}
}

func TestFakeErrcodeClasses(t *testing.T) {
	clock := &fakeClock{now: t0}
	ctx := context.Background()

	t.Run("wrong secret", func(t *testing.T) {
		_, c := newFake(t, clock)
		for _, ep := range endpoints {
			_, err := ep.fetch(c, ctx, testAppID, "wrong-secret")
			checkClass(t, err, ep.endpoint, 40125, wechat.ErrConfig)
		}
	})
	t.Run("unknown appid", func(t *testing.T) {
		_, c := newFake(t, clock)
		for _, ep := range endpoints {
			_, err := ep.fetch(c, ctx, "wx_unknown", testSecret)
			checkClass(t, err, ep.endpoint, 40013, wechat.ErrConfig)
		}
	})
	t.Run("daily quota", func(t *testing.T) {
		fake, c := newFake(t, clock, wechattest.WithDailyQuota(1))
		if _, err := c.ClassicToken(ctx, testAppID, testSecret); err != nil {
			t.Fatal(err)
		}
		_, err := c.ClassicToken(ctx, testAppID, testSecret)
		checkClass(t, err, wechat.EndpointToken, 45009, wechat.ErrQuota)
		if fake.Stats(testAppID).Minted != 1 {
			t.Errorf("the refused call minted")
		}
	})
	t.Run("busy", func(t *testing.T) {
		fake, c := newFake(t, clock)
		for _, ep := range endpoints {
			fake.InjectFault(wechattest.Fault{Kind: wechattest.FaultBusy})
			_, err := ep.fetch(c, ctx, testAppID, testSecret)
			checkClass(t, err, ep.endpoint, -1, wechat.ErrTransient)
		}
	})
	t.Run("injected", func(t *testing.T) {
		fake, c := newFake(t, clock)
		for _, tc := range errcodeClasses {
			for _, ep := range endpoints {
				fake.InjectFault(wechattest.Fault{Kind: wechattest.FaultErrcode, Code: tc.code})
				tok, err := ep.fetch(c, ctx, testAppID, testSecret)
				if tok != (wechat.Token{}) {
					t.Errorf("errcode %d: returned a token", tc.code)
				}
				we := checkClass(t, err, ep.endpoint, tc.code, tc.class)
				if !strings.HasPrefix(we.Message, "injected error") {
					t.Errorf("Message = %q, want the fake's errmsg", we.Message)
				}
			}
		}
		if fake.PendingFaults() != 0 {
			t.Errorf("%d faults never reached the fake", fake.PendingFaults())
		}
	})
}

func TestFakeMalformedReplies(t *testing.T) {
	clock := &fakeClock{now: t0}
	fake, c := newFake(t, clock)
	for _, tc := range malformedCases {
		for _, ep := range endpoints {
			t.Run(ep.endpoint+"/"+tc.name, func(t *testing.T) {
				fake.InjectFault(wechattest.Fault{Kind: wechattest.FaultRaw, Status: tc.status, Body: tc.body})
				tok, err := ep.fetch(c, context.Background(), testAppID, testSecret)
				if fake.PendingFaults() != 0 {
					t.Fatalf("the fault was not consumed")
				}
				checkMalformed(t, tok, err, ep.endpoint, tc)
			})
		}
	}
}

func TestFakeNamedFaults(t *testing.T) {
	clock := &fakeClock{now: t0}
	for _, ep := range endpoints {
		t.Run(ep.endpoint, func(t *testing.T) {
			fake, c := newFake(t, clock)
			ctx := context.Background()
			fetch := func(kind wechattest.FaultKind) (wechat.Token, error) {
				fake.InjectFault(wechattest.Fault{Kind: kind, Endpoint: ep.endpoint})
				tok, err := ep.fetch(c, ctx, testAppID, testSecret)
				if fake.PendingFaults() != 0 {
					t.Fatalf("%v was not consumed", kind)
				}
				return tok, err
			}

			tok, err := fetch(wechattest.FaultHTML502)
			checkMalformed(t, tok, err, ep.endpoint, malformedCase{status: 502, reason: "HTTP status 502"})

			tok, err = fetch(wechattest.FaultEmptyToken)
			checkMalformed(t, tok, err, ep.endpoint, malformedCase{status: 200, reason: "access_token is empty"})

			minted := fake.Stats(testAppID).Minted
			tok, err = fetch(wechattest.FaultTruncatedJSON)
			checkMalformed(t, tok, err, ep.endpoint, malformedCase{status: 200, reason: "truncated"})
			if ep.endpoint == wechat.EndpointToken && fake.Stats(testAppID).Minted != minted+1 {
				t.Errorf("the truncated classic call should have minted upstream (that is why it is ErrOutcomeUnknown)")
			}

			_, err = fetch(wechattest.FaultBusy)
			checkClass(t, err, ep.endpoint, -1, wechat.ErrTransient)

			// A lost reply on a fresh connection: no retry is possible.
			lost := newClientFor(t, fake.URL(), clock)
			fake.InjectFault(wechattest.Fault{Kind: wechattest.FaultLostReply, Endpoint: ep.endpoint})
			tok, err = ep.fetch(lost, ctx, testAppID, testSecret)
			if tok != (wechat.Token{}) {
				t.Errorf("lost reply returned a token")
			}
			checkRequestError(t, err, ep.endpoint, true, nil)

			// And the fake still works afterwards.
			if _, err := ep.fetch(c, ctx, testAppID, testSecret); err != nil {
				t.Errorf("after the faults: %v", err)
			}
		})
	}
}

// Go's transport retries a GET whose reused keep-alive connection closes
// without a reply (see wechattest's doc). For a classic fetch this would
// mint a second time behind the caller's back, so the client never reuses a
// connection: the lost reply must surface as ErrOutcomeUnknown, with exactly
// one token minted.
func TestFakeLostReplyOnReusedConnection(t *testing.T) {
	clock := &fakeClock{now: t0}
	fake, c := newFake(t, clock)
	ctx := context.Background()
	if _, err := c.ClassicToken(ctx, testAppID, testSecret); err != nil { // opens the keep-alive connection
		t.Fatal(err)
	}
	fake.InjectFault(wechattest.Fault{Kind: wechattest.FaultLostReply})
	_, err := c.ClassicToken(ctx, testAppID, testSecret)
	if !errors.Is(err, wechat.ErrOutcomeUnknown) {
		t.Errorf("err = %v, want ErrOutcomeUnknown", err)
	}
	if n := fake.Stats(testAppID).Minted; n != 2 {
		t.Errorf("minted %d, want 2 (the first fetch and the lost one, never a silent third)", n)
	}
}

func TestFakeLatencyAndDeadline(t *testing.T) {
	clock := &fakeClock{now: t0}
	fake, c := newFake(t, clock)
	for _, ep := range endpoints {
		fake.InjectFault(wechattest.Fault{Kind: wechattest.FaultLatency, Latency: time.Minute})
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		_, err := ep.fetch(c, ctx, testAppID, testSecret)
		cancel()
		checkRequestError(t, err, ep.endpoint, true, context.DeadlineExceeded)
	}
}
