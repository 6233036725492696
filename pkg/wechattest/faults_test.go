package wechattest_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

// rawGet returns status and body without insisting on JSON.
func rawGet(t *testing.T, rawURL string) (int, string) {
	t.Helper()
	resp, err := http.Get(rawURL)
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	bodies.mu.Lock()
	bodies.all = append(bodies.all, string(b))
	bodies.mu.Unlock()
	return resp.StatusCode, string(b)
}

func TestFaultKinds(t *testing.T) {
	cases := []struct {
		fault      wechattest.Fault
		check      func(t *testing.T, status int, body string)
		mints      bool
		refused    int
		newCurrent bool
	}{
		{
			fault: wechattest.Fault{Kind: wechattest.FaultBusy},
			check: func(t *testing.T, status int, body string) {
				if status != 200 || !strings.Contains(body, `"errcode":-1`) {
					t.Errorf("busy: got %d %s", status, body)
				}
			},
			refused: 1,
		},
		{
			fault: wechattest.Fault{Kind: wechattest.FaultErrcode, Code: 45011},
			check: func(t *testing.T, status int, body string) {
				if status != 200 || !strings.Contains(body, `"errcode":45011`) {
					t.Errorf("errcode: got %d %s", status, body)
				}
			},
			refused: 1,
		},
		{
			fault: wechattest.Fault{Kind: wechattest.FaultHTML502},
			check: func(t *testing.T, status int, body string) {
				if status != http.StatusBadGateway || !strings.HasPrefix(body, "<html>") {
					t.Errorf("html502: got %d %s", status, body)
				}
			},
		},
		{
			fault: wechattest.Fault{Kind: wechattest.FaultRaw, Status: 503, Body: "upstream says no"},
			check: func(t *testing.T, status int, body string) {
				if status != 503 || body != "upstream says no" {
					t.Errorf("raw: got %d %q", status, body)
				}
			},
		},
		{
			fault: wechattest.Fault{Kind: wechattest.FaultEmptyToken},
			check: func(t *testing.T, status int, body string) {
				if body != `{"access_token":"","expires_in":7200}` {
					t.Errorf("empty token: got %d %s", status, body)
				}
			},
		},
		{
			fault: wechattest.Fault{Kind: wechattest.FaultTruncatedJSON},
			check: func(t *testing.T, status int, body string) {
				var v map[string]any
				if status != 200 || json.Unmarshal([]byte(body), &v) == nil || !strings.HasPrefix(body, `{"access_token":"`) {
					t.Errorf("truncated: want the start of a token reply that is not valid JSON, got %d %s", status, body)
				}
			},
			mints:      true,
			newCurrent: true,
		},
		{
			fault: wechattest.Fault{Kind: wechattest.FaultLatency, Latency: 30 * time.Millisecond},
			check: func(t *testing.T, status int, body string) {
				if status != 200 || !strings.Contains(body, `"access_token":"`) {
					t.Errorf("latency: want a normal token reply, got %d %s", status, body)
				}
			},
			mints:      true,
			newCurrent: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.fault.Kind.String(), func(t *testing.T) {
			s, _ := newFake(t)
			previous := fetchClassic(t, s)
			s.InjectFault(tc.fault)
			began := time.Now()
			status, body := rawGet(t, classicURL(s.URL(), testApp, testSecret))
			tc.check(t, status, body)
			if tc.fault.Kind == wechattest.FaultLatency && time.Since(began) < tc.fault.Latency {
				t.Errorf("latency %v: answered after %v", tc.fault.Latency, time.Since(began))
			}
			st := s.Stats(testApp)
			wantMinted := 1
			if tc.mints {
				wantMinted = 2
			}
			if st.Minted != wantMinted || st.Refused != tc.refused {
				t.Errorf("Stats = %+v, want Minted %d, Refused %d", st, wantMinted, tc.refused)
			}
			if got := s.CurrentToken(testApp) != previous; got != tc.newCurrent {
				t.Errorf("current token replaced = %v, want %v", got, tc.newCurrent)
			}
			if s.PendingFaults() != 0 {
				t.Errorf("fault not consumed")
			}
			if after := fetchClassic(t, s); after == "" {
				t.Errorf("the call after the fault must be normal")
			}
		})
	}
}

func TestFaultQueueTimesAndMatching(t *testing.T) {
	s, _ := newFake(t, wechattest.WithApp("wxother", "other-secret"))
	s.InjectFault(wechattest.Fault{Kind: wechattest.FaultBusy, AppID: testApp, Times: 3})
	s.InjectFault(wechattest.Fault{Kind: wechattest.FaultErrcode, Code: 50007})
	s.InjectFault(wechattest.Fault{Kind: wechattest.FaultHTML502, Endpoint: "/cgi-bin/stable_token"})
	if got := s.PendingFaults(); got != 5 {
		t.Fatalf("PendingFaults = %d, want 5", got)
	}

	// The other app skips the app-specific fault and takes the next one.
	if r := getURL(t, classicURL(s.URL(), "wxother", "other-secret")); r.ErrCode != 50007 {
		t.Fatalf("other app: errcode %d, want 50007 (the any-app fault)", r.ErrCode)
	}
	for i := range 3 {
		if r := getURL(t, classicURL(s.URL(), testApp, testSecret)); r.ErrCode != -1 {
			t.Fatalf("call %d of Times 3: errcode %d, want -1", i+1, r.ErrCode)
		}
	}
	// Classic calls skip the stable-only fault.
	fetchClassic(t, s)
	if got := s.PendingFaults(); got != 1 {
		t.Fatalf("PendingFaults = %d, want 1 (the stable-only fault)", got)
	}
	status, _ := postRaw(t, s.URL()+"/cgi-bin/stable_token", stableBody(testApp, testSecret, false))
	if status != http.StatusBadGateway {
		t.Fatalf("stable call: status %d, want 502", status)
	}
	fetchStable(t, s, false)
	if st := s.Stats(testApp); st.Refused != 3 || st.Minted != 2 {
		t.Errorf("Stats = %+v, want Refused 3, Minted 2", st)
	}
	if st := s.Stats("wxother"); st.Refused != 1 || st.Minted != 0 {
		t.Errorf("Stats(other) = %+v, want Refused 1", st)
	}
}

func postRaw(t *testing.T, rawURL, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(rawURL, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A lost stable reply mints only if the call would have: in normal mode
// with a live token it changes nothing.
func TestLostReplyOnStableMintsOnlyWhenTheCallWould(t *testing.T) {
	s, _ := newFake(t)
	current := fetchStable(t, s, false).AccessToken
	s.InjectFault(wechattest.Fault{Kind: wechattest.FaultLostReply, Endpoint: "/cgi-bin/stable_token"})
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Post(s.URL()+"/cgi-bin/stable_token", "application/json", strings.NewReader(stableBody(testApp, testSecret, false)))
	if err == nil {
		resp.Body.Close()
		t.Fatal("lost reply: want a connection error")
	}
	if st := s.Stats(testApp); st.Minted != 1 || s.CurrentStableToken(testApp) != current {
		t.Fatalf("lost normal stable reply changed state: %+v", st)
	}
}

// entryExit wraps a handler to signal when a request enters and leaves it.
type entryExit struct {
	h             http.Handler
	entered, left chan struct{}
}

func (e *entryExit) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.entered <- struct{}{}
	defer func() { e.left <- struct{}{} }()
	e.h.ServeHTTP(w, r)
}

func TestLatencyStopsWhenClientDisconnects(t *testing.T) {
	s := wechattest.NewHandler(wechattest.WithApp(testApp, testSecret))
	defer s.Close()
	if s.URL() != "" {
		t.Errorf("NewHandler: URL() = %q, want empty", s.URL())
	}
	wrap := &entryExit{h: s.Handler(), entered: make(chan struct{}, 1), left: make(chan struct{}, 1)}
	ts := httptest.NewServer(wrap)
	defer ts.Close()

	s.InjectFault(wechattest.Fault{Kind: wechattest.FaultLatency, Latency: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, classicURL(ts.URL, testApp, testSecret), nil)
	errc := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	<-wrap.entered
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("client: want context.Canceled, got %v", err)
	}
	select {
	case <-wrap.left:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler still waits 10 s after the client hung up")
	}
	if st := s.Stats(testApp); st.Minted != 0 {
		t.Fatalf("a call abandoned during its latency minted: %+v", st)
	}
}

func TestCloseReleasesLatencyWaits(t *testing.T) {
	s := wechattest.NewHandler(wechattest.WithApp(testApp, testSecret))
	wrap := &entryExit{h: s.Handler(), entered: make(chan struct{}, 1), left: make(chan struct{}, 1)}
	ts := httptest.NewServer(wrap)
	defer ts.Close()
	s.InjectFault(wechattest.Fault{Kind: wechattest.FaultLatency, Latency: time.Hour})
	errc := make(chan error, 1)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	go func() {
		resp, err := client.Get(classicURL(ts.URL, testApp, testSecret))
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	<-wrap.entered
	s.Close()
	select {
	case <-wrap.left:
	case <-time.After(10 * time.Second):
		t.Fatal("a latency wait outlived Close by 10 s")
	}
	if err := <-errc; err == nil {
		t.Fatal("client of a closed fake: want a connection error")
	}
	if st := s.Stats(testApp); st.Minted != 0 {
		t.Fatalf("minted during Close: %+v", st)
	}
}

// Close of a started server returns at once even with a request waiting
// in a latency fault (httptest.Server.Close waits for active requests).
func TestServerCloseDoesNotWaitForLatency(t *testing.T) {
	s := wechattest.NewServer(wechattest.WithApp(testApp, testSecret))
	s.InjectFault(wechattest.Fault{Kind: wechattest.FaultLatency, Latency: time.Hour})
	errc := make(chan error, 1)
	go func() {
		resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Get(classicURL(s.URL(), testApp, testSecret))
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	// A started server exposes no hook; the queued fault is taken as the
	// request arrives, so poll for that, bounded.
	for i := 0; s.PendingFaults() != 0; i++ {
		if i == 2000 {
			t.Fatal("the request never reached the fake")
		}
		time.Sleep(2 * time.Millisecond)
	}
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close blocked for 10 s")
	}
	select {
	case err := <-errc:
		if err == nil {
			t.Error("client of a closed fake: want a connection error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("client still waiting 10 s after Close")
	}
}

func TestInjectFaultRejectsBadFaults(t *testing.T) {
	s, _ := newFake(t)
	for _, f := range []wechattest.Fault{
		{Kind: 0},
		{Kind: wechattest.FaultErrcode + 1},
		{Kind: wechattest.FaultBusy, Times: -1},
		{Kind: wechattest.FaultLatency, Latency: -time.Second},
		{Kind: wechattest.FaultBusy, Endpoint: "/cgi-bin/tokn"},
		{Kind: wechattest.FaultErrcode},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("InjectFault(%+v) did not panic", f)
				}
			}()
			s.InjectFault(f)
		}()
	}
	if s.PendingFaults() != 0 {
		t.Error("a rejected fault was queued")
	}
}
