package scheduler_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/scheduler"
	"github.com/tokenkeeper/tokenkeeper/internal/testlog"
	"github.com/tokenkeeper/tokenkeeper/internal/tktest"
	"github.com/tokenkeeper/tokenkeeper/internal/tktest/fleet"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

var _ scheduler.Refresher = tokencache.Admin{}

const (
	secretA   = "secret-a-0123456789abcdef0123456"
	secretB   = "secret-b-0123456789abcdef0123456"
	secretBad = "secret-wrong-0123456789abcdef012"
)

// The scheduler on a real cache (miniredis) and the fake WeChat: one fetch
// per app, a wrong secret stops its app, and the next leadership term finds
// the tokens fresh and fetches nothing.
func TestWithRealCache(t *testing.T) {
	up := wechattest.New(t, wechattest.WithApp("wxa", secretA), wechattest.WithApp("wxb", secretB), wechattest.WithApp("wxbad", "the-real-secret-0123456789abcdef"))
	src := fleet.SourceOn(t, up,
		wechat.App{ID: "wxa", Secret: secretA, Mode: wechat.Classic},
		wechat.App{ID: "wxb", Secret: secretB, Mode: wechat.Stable},
		wechat.App{ID: "wxbad", Secret: secretBad, Mode: wechat.Classic},
	)
	rdb := tktest.Open(t, tktest.Miniredis).Client()
	var logs testlog.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cache, err := tokencache.New(rdb, src, tokencache.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cache.Close() })

	results := make(chan scheduler.Result, 16)
	plans := make(chan scheduler.Plan, 2)
	s, err := scheduler.New(scheduler.Config{
		Apps: []string{"wxa", "wxb", "wxbad"}, Refresher: cache.Admin(), Logger: log,
		OnResult:  func(r scheduler.Result) { results <- r },
		OnPlanned: func(p scheduler.Plan) { plans <- p },
	})
	if err != nil {
		t.Fatal(err)
	}
	runTerm := func(want int) map[string]scheduler.Result {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		got := map[string]scheduler.Result{}
		if want == 0 {
			select {
			case p := <-plans:
				plans <- p
			case <-time.After(10 * time.Second):
				t.Fatal("no plan within 10s")
			}
		}
		for len(got) < want {
			select {
			case r := <-results:
				got[r.AppID] = r
			case <-time.After(10 * time.Second):
				t.Fatalf("only %d results within 10s", len(got))
			}
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
		return got
	}

	first := runTerm(3)
	for _, app := range []string{"wxa", "wxb"} {
		r := first[app]
		if r.Class != scheduler.ClassOK || r.Token.Value == "" || !r.Next.After(time.Now().Add(time.Hour)) {
			t.Fatalf("%s: class %q err %v next in %v; want ok, due in over an hour", app, r.Class, r.Err, time.Until(r.Next))
		}
		if n := up.Stats(app).Minted; n != 1 {
			t.Fatalf("%s: %d tokens minted; want 1", app, n)
		}
	}
	if r := first["wxbad"]; r.Class != scheduler.ClassConfig || r.Next.Before(time.Now().Add(scheduler.DefaultConfigRetry-time.Minute)) {
		t.Fatalf("wxbad: class %q next %v err %v; want config, retried slowly", r.Class, r.Next, r.Err)
	}

	if p := <-plans; p.Apps != 3 || p.FromRecords != 0 || p.DueNow != 3 {
		t.Fatalf("first term's plan %+v; want 3 apps due at once (empty Redis)", p)
	}
	// The lead was lost and regained: the second term reads both records
	// in one batch and plans them at their RefreshAt, without a Refresh; wxbad,
	// which has none, is due at once (a config error is retried, never
	// stopped for good).
	second := runTerm(1)
	if p := <-plans; p.Apps != 3 || p.FromRecords != 2 || p.DueNow != 1 {
		t.Fatalf("second term's plan %+v; want wxa and wxb planned from their records, wxbad due", p)
	}
	for _, app := range []string{"wxa", "wxb"} {
		if up.Stats(app).Minted != 1 {
			t.Fatalf("%s: the second term fetched again (minted %d)", app, up.Stats(app).Minted)
		}
	}
	// The cache's hold answers for wxbad without asking WeChat again.
	if r := second["wxbad"]; len(second) != 1 || r.Class != scheduler.ClassConfig || up.Stats("wxbad").Refused != 1 {
		t.Fatalf("the second term refreshed %v; want only wxbad, config, refused upstream still once (%d)", second, up.Stats("wxbad").Refused)
	}
	for _, a := range s.Snapshot() {
		if a.AppID == "wxbad" {
			continue
		}
		if at := first[a.AppID].Token.RefreshAt; a.Next.Before(at) || a.Next.After(at.Add(scheduler.DefaultMaxJitter)) {
			t.Fatalf("%s: planned at %v; want its record's RefreshAt %v plus at most the jitter", a.AppID, a.Next, at)
		}
	}

	out := logs.String()
	for _, secret := range []string{secretA, secretB, secretBad, first["wxa"].Token.Value, first["wxb"].Token.Value} {
		if strings.Contains(out, secret) {
			t.Fatalf("logs contain a secret or token %q:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "app=wxbad") {
		t.Fatalf("no ERROR for wxbad in logs:\n%s", out)
	}
}
