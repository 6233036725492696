package tokencache_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time { return c.t }

func TestTransportAddsTokenAndRetriesOnceAfterInvalidation(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 11, 20, 4, 0, 0, 0, time.UTC)}
	fake := wechattest.New(t, wechattest.WithApp("wxt", "transport-secret-123"), wechattest.WithClock(clock.Now),
		wechattest.WithGrace(time.Minute))
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	src, err := wechat.NewSource(wechat.NewClient(wechat.WithBaseURL(fake.URL()), wechat.WithClock(clock.Now)),
		wechat.App{ID: "wxt", Secret: "transport-secret-123"})
	if err != nil {
		t.Fatal(err)
	}
	cache, err := tokencache.New(rdb, src, tokencache.WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cache.Close() })
	httpc := &http.Client{Transport: &tokencache.Transport{Source: cache.App("wxt")}}

	get := func() (string, int) {
		resp, err := httpc.Get(fake.URL() + "/cgi-bin/get_api_domain_ip?x=1")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b), fake.Stats("wxt").Minted
	}
	if body, minted := get(); !strings.Contains(body, "ip_list") || minted != 1 {
		t.Fatalf("first call: %s, minted %d", body, minted)
	}
	// Someone outside the fleet fetches twice: our token dies after the grace.
	for i := 0; i < 2; i++ {
		if _, err := wechat.NewClient(wechat.WithBaseURL(fake.URL())).ClassicToken(context.Background(), "wxt", "transport-secret-123"); err != nil {
			t.Fatal(err)
		}
	}
	clock.t = clock.t.Add(2 * time.Minute)
	m.FastForward(2 * time.Minute)
	// The caller sees a success: the transport reported the dead token,
	// got a new one (one fetch) and retried once.
	if body, minted := get(); !strings.Contains(body, "ip_list") || minted != 4 {
		t.Fatalf("after invalidation: %s, minted %d (want 4: ours, two outside, one refresh)", body, minted)
	}
	st := fake.Stats("wxt")
	if st.BusinessSuperseded != 1 || st.BusinessOK != 2 {
		t.Fatalf("business ok %d, 40001 %d; want 2 and 1", st.BusinessOK, st.BusinessSuperseded)
	}
	// A body that cannot be replayed is not retried: the caller gets
	// WeChat's answer intact, and the dead token is still reported so the
	// next request works.
	for i := 0; i < 2; i++ {
		if _, err := wechat.NewClient(wechat.WithBaseURL(fake.URL())).ClassicToken(context.Background(), "wxt", "transport-secret-123"); err != nil {
			t.Fatal(err)
		}
	}
	clock.t = clock.t.Add(2 * time.Minute)
	m.FastForward(2 * time.Minute)
	req, _ := http.NewRequest(http.MethodGet, fake.URL()+"/cgi-bin/get_api_domain_ip", io.NopCloser(strings.NewReader("x")))
	resp, err := httpc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "40001") {
		t.Fatalf("non-replayable request: got %s, want WeChat's 40001 answer passed through", b)
	}
	if body, minted := get(); !strings.Contains(body, "ip_list") || minted != 7 {
		t.Fatalf("next call: %s, minted %d (want 7: the report fetched once)", body, minted)
	}
}
