package tokencache

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/testlog"
	"github.com/tokenkeeper/tokenkeeper/internal/tktest"
	"github.com/tokenkeeper/tokenkeeper/pkg/fieldcheck"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

func TestColdStartFetchesOnceAcrossProcessesAndGoroutines(t *testing.T) {
	tktest.ForEachBackend(t, func(t *testing.T, b *tktest.Backend) {
		f := newFixtureOn(t, b)
		caches := []*Cache{f.cache, f.newCache(t), f.newCache(t), f.newCache(t)}
		var wg sync.WaitGroup
		got := make(chan string, 200)
		for i := 0; i < 200; i++ {
			wg.Add(1)
			go func(c *Cache) {
				defer wg.Done()
				tok, err := c.Token(context.Background(), "wx1")
				if err != nil {
					t.Error(err)
					return
				}
				got <- tok.Value
			}(caches[i%len(caches)])
		}
		wg.Wait()
		close(got)
		for v := range got {
			if v != "tok-1" {
				t.Fatalf("a caller got %q, want tok-1", v)
			}
		}
		if n := f.src.Calls(); n != 1 {
			t.Fatalf("upstream fetches = %d, want 1", n)
		}
		rec, ttl := f.record(t, "wx1")
		if rec.Version != 1 || rec.Value != "tok-1" {
			t.Fatalf("record = %+v", rec)
		}
		// 7200 s minus the 60 s margin.
		if want := 7140 * time.Second; !f.ttlIs(ttl, want) {
			t.Fatalf("key TTL = %v, want %v", ttl, want)
		}
		if !rec.UsableUntil.Equal(t0.Add(7140*time.Second)) || !rec.RefreshAt.Equal(t0.Add(6840*time.Second)) {
			t.Fatalf("usable %v refresh %v", rec.UsableUntil, rec.RefreshAt)
		}
	})
}

func TestNearHitDoesNoRedisIO(t *testing.T) {
	tktest.ForEachBackend(t, func(t *testing.T, b *tktest.Backend) {
		f := newFixtureOn(t, b)
		mustToken(t, f.cache, "wx1")
		before := f.cmds.n.Load()
		for i := 0; i < 100; i++ {
			mustToken(t, f.cache, "wx1")
		}
		if n := f.cmds.n.Load() - before; n != 0 {
			t.Fatalf("near hits sent %d Redis commands, want 0", n)
		}
		if s := f.cache.Admin().Stats(); s.NearMisses != 1 {
			t.Fatalf("NearMisses = %d, want 1 (the first call)", s.NearMisses)
		}
		// Before the near max age the copy is re-read from Redis once, in the
		// background, while every caller is served from memory.
		f.clock.Advance(8 * time.Second)
		st, _ := f.cache.app("wx1")
		before = f.cmds.n.Load()
		for i := 0; i < 100; i++ {
			mustToken(t, f.cache, "wx1")
		}
		waitFor(t, "the background read", func() bool { return !st.near.revalidating.Load() && f.cmds.n.Load() > before })
		for i := 0; i < 100; i++ {
			mustToken(t, f.cache, "wx1")
		}
		if n := f.cmds.n.Load() - before; n != 1 {
			t.Fatalf("revalidating sent %d Redis commands, want 1", n)
		}
		if s := f.cache.Admin().Stats(); s.NearMisses != 1 {
			t.Fatalf("NearMisses = %d, want 1: no caller waited for the revalidation", s.NearMisses)
		}
	})
}

func TestShortLifetimeNeverGivesNonPositiveTTL(t *testing.T) {
	for _, exp := range []time.Duration{300 * time.Second, 10 * time.Second, 2 * time.Second, time.Second} {
		tktest.ForEachBackend(t, func(t *testing.T, b *tktest.Backend) {
			f := newFixtureOn(t, b)
			f.src.expiresIn = exp
			tok := mustToken(t, f.cache, "wx1")
			_, ttl := f.record(t, "wx1")
			wantTTL := exp - min(time.Minute, exp/5)
			if !f.ttlIs(ttl, wantTTL) || ttl <= 0 {
				t.Fatalf("expires_in %v: TTL %v, want %v (> 0)", exp, ttl, wantTTL)
			}
			if !tok.RefreshAt.After(t0) || tok.RefreshAt.After(tok.UsableUntil) {
				t.Fatalf("expires_in %v: refresh at %v not within (now, usable %v]", exp, tok.RefreshAt, tok.UsableUntil)
			}
		})
	}
}

func TestDueTokenIsServedWhileOneBackgroundRefreshRuns(t *testing.T) {
	tktest.ForEachBackend(t, func(t *testing.T, b *tktest.Backend) {
		fetched := make(chan FetchEvent, 10)
		hooks := WithHooks(Hooks{OnFetch: func(e FetchEvent) { fetched <- e }})
		f := newFixtureOn(t, b, hooks)
		other := f.newCache(t, hooks) // either process may win the refresh
		first := mustToken(t, f.cache, "wx1")
		<-fetched
		mustToken(t, other, "wx1")

		f.src.block = make(chan struct{})
		f.src.started = make(chan struct{}, 10)
		f.clock.Advance(first.RefreshAt.Sub(t0) + time.Second)
		// Both processes see the token due; both keep serving it at once.
		for i := 0; i < 50; i++ {
			for _, c := range []*Cache{f.cache, other} {
				if tok := mustToken(t, c, "wx1"); tok.Value != first.Value {
					t.Fatalf("got %q while refreshing, want the current %q", tok.Value, first.Value)
				}
			}
		}
		<-f.src.started
		close(f.src.block)
		if e := <-fetched; e.Result != "ok" {
			t.Fatalf("background fetch result %q (%v)", e.Result, e.Err)
		}
		if n := f.src.Calls(); n != 2 {
			t.Fatalf("upstream fetches = %d, want 2 (cold start + one refresh for the fleet)", n)
		}
		// The change message reaches the other process, which drops its copy.
		waitFor(t, "the other process to see tok-2", func() bool { return mustToken(t, other, "wx1").Value == "tok-2" })
	})
}

func TestInvalidateFetchesOnlyForTheCurrentToken(t *testing.T) {
	tktest.ForEachBackend(t, func(t *testing.T, b *tktest.Backend) {
		f := newFixtureOn(t, b)
		caches := []*Cache{f.cache, f.newCache(t), f.newCache(t)}
		first := mustToken(t, f.cache, "wx1")

		var wg sync.WaitGroup
		for i := 0; i < 300; i++ {
			wg.Add(1)
			go func(c *Cache) {
				defer wg.Done()
				tok, err := c.Invalidate(context.Background(), "wx1", first.Value)
				if err != nil || tok.Value != "tok-2" {
					t.Errorf("Invalidate = %q, %v; want tok-2", tok.Value, err)
				}
			}(caches[i%3])
		}
		wg.Wait()
		if n := f.src.Calls(); n != 2 {
			t.Fatalf("upstream fetches = %d, want 2 (cold start + one passive refresh)", n)
		}
		// Reporting the replaced token again changes nothing.
		tok, err := f.cache.Invalidate(context.Background(), "wx1", first.Value)
		if err != nil || tok.Value != "tok-2" || f.src.Calls() != 2 {
			t.Fatalf("stale report: %q, %v, fetches %d", tok.Value, err, f.src.Calls())
		}
		if _, err := f.cache.Invalidate(context.Background(), "wx1", ""); err == nil {
			t.Fatal("empty token accepted")
		}
	})
}

func TestRedisDownServesTheLastGoodTokenAndNeverFetches(t *testing.T) {
	tktest.ForEachBackend(t, func(t *testing.T, b *tktest.Backend) {
		f := newFixtureOn(t, b)
		tok := mustToken(t, f.cache, "wx1")
		f.b.Down()
		f.clock.Advance(3 * time.Minute) // past the near max age, within the confirmation horizon
		got, err := f.cache.Token(context.Background(), "wx1")
		if err != nil || got.Value != tok.Value {
			t.Fatalf("during outage: %q, %v; want the last good token", got.Value, err)
		}
		waitFor(t, "a failed background read", func() bool { return f.cache.Admin().Stats().RevalidationErrors > 0 })
		// Four minutes (the overlap less the margin) after Redis last
		// confirmed it, a fetch elsewhere may have killed it.
		f.clock.Advance(time.Minute)
		_, err = f.cache.Token(context.Background(), "wx1")
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("past the confirmation horizon: %v, want ErrUnavailable", err)
		}
		// A fresh process with nothing in memory gets the error too, and a
		// classic app is never fetched without the lock.
		c2 := f.newCache(t)
		if _, err := c2.Token(context.Background(), "wx2"); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("cold process during outage: %v, want ErrUnavailable", err)
		}
		if n := f.src.Calls(); n != 1 {
			t.Fatalf("upstream fetches = %d, want 1: a Redis error must not count as a miss", n)
		}
	})
}

func TestRedisDownStableAppFetchesWithoutLock(t *testing.T) {
	tktest.ForEachBackend(t, func(t *testing.T, b *tktest.Backend) {
		f := newFixtureOn(t, b)
		f.src.mode = wechat.Stable
		c := f.newCache(t)
		f.b.Down()
		tok, err := c.Token(context.Background(), "wx1")
		if err != nil || tok.Value != "tok-1" {
			t.Fatalf("stable during outage: %q, %v", tok.Value, err)
		}
		if _, err := c.Token(context.Background(), "wx1"); err != nil {
			t.Fatal(err)
		}
		if n := f.src.Calls(); n != 1 {
			t.Fatalf("fetches = %d, want 1 (kept in memory)", n)
		}
	})
}

func TestQuotaErrorStopsFetchingAndKeepsServing(t *testing.T) {
	tktest.ForEachBackend(t, func(t *testing.T, b *tktest.Backend) {
		fetched := make(chan FetchEvent, 10)
		f := newFixtureOn(t, b, WithHooks(Hooks{OnFetch: func(e FetchEvent) { fetched <- e }}))
		first := mustToken(t, f.cache, "wx1")
		<-fetched
		f.src.QueueErr(&wechat.Error{Code: 45009, Endpoint: wechat.EndpointToken})
		f.clock.Advance(first.RefreshAt.Sub(t0))
		if tok := mustToken(t, f.cache, "wx1"); tok.Value != first.Value {
			t.Fatalf("got %q", tok.Value)
		}
		if e := <-fetched; e.Result != "quota" {
			t.Fatalf("result %q, want quota", e.Result)
		}
		for i := 0; i < 20; i++ {
			if tok := mustToken(t, f.cache, "wx1"); tok.Value != first.Value {
				t.Fatalf("got %q, want the last good token", tok.Value)
			}
		}
		if n := f.src.Calls(); n != 2 {
			t.Fatalf("fetches = %d, want 2: no retry loop after 45009", n)
		}
		until, cause := f.cache.Admin().Held("wx1")
		if !errors.Is(cause, wechat.ErrQuota) || !until.Equal(wechat.NextQuotaReset(f.clock.Now())) {
			t.Fatalf("Held = %v, %v; want until Beijing midnight", until, cause)
		}
	})
}

func TestConfigErrorIsNotRetriedInALoop(t *testing.T) {
	tktest.ForEachBackend(t, func(t *testing.T, b *tktest.Backend) {
		f := newFixtureOn(t, b)
		f.src.QueueErr(&wechat.Error{Code: 40125, Endpoint: wechat.EndpointToken})
		_, err := f.cache.Token(context.Background(), "wx1")
		if !errors.Is(err, wechat.ErrConfig) {
			t.Fatalf("err = %v, want ErrConfig", err)
		}
		for i := 0; i < 10; i++ {
			_, err := f.cache.Token(context.Background(), "wx1")
			var held *HeldError
			if !errors.As(err, &held) || !errors.Is(err, wechat.ErrConfig) {
				t.Fatalf("err = %v, want a HeldError wrapping ErrConfig", err)
			}
		}
		if n := f.src.Calls(); n != 1 {
			t.Fatalf("fetches = %d, want 1", n)
		}
		f.clock.Advance(5 * time.Minute)
		if tok := mustToken(t, f.cache, "wx1"); tok.Value != "tok-2" {
			t.Fatalf("after the hold: %q", tok.Value)
		}
	})
}

func TestTransientErrorsBackOffWithJitter(t *testing.T) {
	tktest.ForEachBackend(t, func(t *testing.T, b *tktest.Backend) {
		f := newFixtureOn(t, b)
		f.src.QueueErr(&wechat.Error{Code: -1, Endpoint: wechat.EndpointToken}, &wechat.Error{Code: -1, Endpoint: wechat.EndpointToken})
		if _, err := f.cache.Token(context.Background(), "wx1"); !errors.Is(err, wechat.ErrTransient) {
			t.Fatalf("err = %v", err)
		}
		until1, _ := f.cache.Admin().Held("wx1")
		if d := until1.Sub(f.clock.Now()); d < 500*time.Millisecond || d > time.Second {
			t.Fatalf("first backoff %v, want within [base/2, base] = [0.5s, 1s]", d)
		}
		if _, err := f.cache.Token(context.Background(), "wx1"); err == nil || f.src.Calls() != 1 {
			t.Fatalf("retried during backoff: err %v, calls %d", err, f.src.Calls())
		}
		f.clock.Advance(time.Second)
		if _, err := f.cache.Token(context.Background(), "wx1"); !errors.Is(err, wechat.ErrTransient) {
			t.Fatalf("second attempt err = %v", err)
		}
		until2, _ := f.cache.Admin().Held("wx1")
		if d := until2.Sub(f.clock.Now()); d < time.Second || d > 2*time.Second {
			t.Fatalf("second backoff %v, want within [1s, 2s]", d)
		}
		f.clock.Advance(2 * time.Second)
		if tok := mustToken(t, f.cache, "wx1"); tok.Value != "tok-3" {
			t.Fatalf("after backoff: %q", tok.Value)
		}
	})
}

func TestDailyBudgetIsSharedAndRefusesBeforeSending(t *testing.T) {
	tktest.ForEachBackend(t, func(t *testing.T, b *tktest.Backend) {
		f := newFixtureOn(t, b, WithDailyBudget(2))
		other := f.newCache(t, WithDailyBudget(2))
		first := mustToken(t, f.cache, "wx1")
		second, err := other.Invalidate(context.Background(), "wx1", first.Value)
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.cache.Invalidate(context.Background(), "wx1", second.Value)
		if !errors.Is(err, ErrBudgetExceeded) {
			t.Fatalf("third fetch: %v, want ErrBudgetExceeded", err)
		}
		if n := f.src.Calls(); n != 2 {
			t.Fatalf("upstream fetches = %d, want 2", n)
		}
		if n, _ := f.cache.Admin().FetchesToday(context.Background(), "wx1"); n != 2 {
			t.Fatalf("FetchesToday = %d, want 2", n)
		}
		// A new Beijing day has a new budget.
		f.clock.Advance(wechat.NextQuotaReset(f.clock.Now()).Sub(f.clock.Now()) + time.Minute)
		if _, err := other.Invalidate(context.Background(), "wx1", second.Value); err != nil {
			t.Fatalf("next day: %v", err)
		}
	})
}

func TestCorruptRecordKeepsTheLastGoodTokenAndIsReplaced(t *testing.T) {
	tktest.ForEachBackend(t, func(t *testing.T, b *tktest.Backend) {
		var logs testlog.Buffer
		f := newFixtureOn(t, b, WithLogger(newTestLogger(&logs)))
		first := mustToken(t, f.cache, "wx1")
		f.admin.Set(context.Background(), "tokenkeeper:{wx1}:token", "<html>oops</html>", 0)
		f.clock.Advance(11 * time.Second)
		f.src.QueueErr(errBoom) // the replacement fails at first: the last good token serves meanwhile
		tok, err := f.cache.Token(context.Background(), "wx1")
		if err != nil || tok.Value != first.Value {
			t.Fatalf("got %q, %v; want the last good token", tok.Value, err)
		}
		waitFor(t, "the corruption to be logged", func() bool {
			return strings.Contains(logs.String(), `corrupt record at \"tokenkeeper:{wx1}:token\": unknown format`)
		})
		// A process with nothing in memory replaces it.
		c2 := f.newCache(t)
		waitFor(t, "the corrupt record to be replaced", func() bool {
			tok, err := c2.Token(context.Background(), "wx1")
			return err == nil && tok.Value != first.Value
		})
		rec, _ := f.record(t, "wx1")
		if rec.Value == first.Value {
			t.Fatal("corrupt record not replaced")
		}
	})
}

func TestInvalidAppIDs(t *testing.T) {
	f := newFixture(t)
	for _, id := range []string{"", "a{b}", "a|b", "a b", strings.Repeat("x", 65)} {
		if _, err := f.cache.Token(context.Background(), id); !errors.Is(err, ErrInvalidAppID) {
			t.Errorf("appid %q: %v, want ErrInvalidAppID", id, err)
		}
	}
}

func TestOptionsAreValidated(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		opt  Option
		want string
	}{
		{WithKeyPrefix("a{b}"), "KeyPrefix"},
		{WithLockTTL(time.Second), "FetchTimeout"},
		{WithOverlap(time.Minute), "Overlap"},
		{WithNearMaxAge(-1), "NearMaxAge"},
		{WithDailyBudget(-1), "DailyBudget"},
		{WithRefreshAhead(0), "RefreshAhead"},
		{WithPassiveRefreshLimit(-1, time.Minute, 0), "PassiveLimit"},
		{WithPassiveRefreshLimit(1, 0, 0), "PassiveWindow"},
		{WithBackoff(time.Minute, time.Second), "BackoffMax"},
	} {
		_, err := New(f.rdb, f.src, tc.opt)
		var fe *fieldcheck.Error
		if !errors.As(err, &fe) || fe.Problems[0].Field != tc.want {
			t.Errorf("%s: err = %v", tc.want, err)
		}
	}
	// Every problem at once.
	bad := DefaultConfig()
	bad.KeyPrefix, bad.DailyBudget, bad.NearMaxAge = "", -1, -1
	var fe *fieldcheck.Error
	if err := bad.Validate(); !errors.As(err, &fe) || len(fe.Problems) != 3 {
		t.Fatalf("three problems: %v", err)
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig: %v", err)
	}
}
