package metrics

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

var cacheStatsNames = []string{"tokenkeeper_cache_corrupt_records_total", "tokenkeeper_cache_revalidations_total",
	"tokenkeeper_cache_subscription_gaps_total", "tokenkeeper_invalidations_total"}

// The cache's own counters are read from Stats at scrape time, never pushed.
func TestCacheStatsAreReadAtScrapeTime(t *testing.T) {
	m, reg := newTest(t)
	if n, err := testutil.GatherAndCount(reg, cacheStatsNames...); err != nil || n != 0 {
		t.Fatalf("before SetCacheStats: %d series, err %v; want none", n, err)
	}
	var scrapes atomic.Int64
	m.SetCacheStats(func() tokencache.Stats {
		n := scrapes.Add(1)
		return tokencache.Stats{CorruptRecords: 2 * n, SubscriptionGaps: 3, Revalidations: 40, RevalidationErrors: 5,
			Invalidations: 7, InvalidationsIgnored: 11, InvalidationsRefuted: 13, NearMisses: 99}
	})
	want := func(corrupt string) string {
		return `
# HELP tokenkeeper_cache_corrupt_records_total Corrupt records this process read from Redis (never served; a fetch replaces them).
# TYPE tokenkeeper_cache_corrupt_records_total counter
tokenkeeper_cache_corrupt_records_total ` + corrupt + `
# HELP tokenkeeper_cache_revalidations_total Background re-reads of a near-cached token by this process: ok (Redis confirmed it), error (Redis did not answer; the copy kept serving).
# TYPE tokenkeeper_cache_revalidations_total counter
tokenkeeper_cache_revalidations_total{result="error"} 5
tokenkeeper_cache_revalidations_total{result="ok"} 40
# HELP tokenkeeper_cache_subscription_gaps_total (Re)subscriptions to the change channel: announcements may have been missed, so every near copy was re-confirmed.
# TYPE tokenkeeper_cache_subscription_gaps_total counter
tokenkeeper_cache_subscription_gaps_total 3
# HELP tokenkeeper_invalidations_total Passive-refresh reports handled by this process, by outcome: ignored (not the current token; nothing spent), refuted (WeChat still accepts it), believed (went on to fetch or to wait for a fetch; those the fleet-wide rate refused are fetches_total{result="limited"}).
# TYPE tokenkeeper_invalidations_total counter
tokenkeeper_invalidations_total{outcome="believed"} 7
tokenkeeper_invalidations_total{outcome="ignored"} 11
tokenkeeper_invalidations_total{outcome="refuted"} 13
`
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want("2")), cacheStatsNames...); err != nil {
		t.Fatalf("first scrape: %v", err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want("4")), cacheStatsNames...); err != nil {
		t.Fatalf("second scrape (Stats must be read again): %v", err)
	}
}

// Killed-outside is counted per app from Hooks.OnKilledOutside, each
// configured app starting at 0 so increase() sees the first kill.
func TestKilledOutsideIsCountedPerApp(t *testing.T) {
	m, reg := newTest(t)
	m.InitApps([]string{"wxa", "wxb", "wxc"})
	h := m.Hooks()
	h.OnKilledOutside("wxa")
	h.OnKilledOutside("wxa")
	h.OnKilledOutside("wxb")
	err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP tokenkeeper_tokens_killed_outside_total Current tokens that WeChat refused before their usable end: killed by a fetch outside the fleet (is the AppSecret used elsewhere?).
# TYPE tokenkeeper_tokens_killed_outside_total counter
tokenkeeper_tokens_killed_outside_total{app="wxa"} 2
tokenkeeper_tokens_killed_outside_total{app="wxb"} 1
tokenkeeper_tokens_killed_outside_total{app="wxc"} 0
`), "tokenkeeper_tokens_killed_outside_total")
	if err != nil {
		t.Fatal(err)
	}
}

// A passive refresh refused by the fleet-wide rate is a fetch result of its
// own, not "other".
func TestLimitedFetchesAreCounted(t *testing.T) {
	m, _ := newTest(t)
	m.ObserveFetch(tokencache.FetchEvent{AppID: "wxa", Result: "limited"})
	if got := testutil.ToFloat64(m.fetches.WithLabelValues("wxa", "limited")); got != 1 {
		t.Fatalf("limited fetches = %v; want 1", got)
	}
	if got := testutil.ToFloat64(m.fetches.WithLabelValues("wxa", "other")); got != 0 {
		t.Fatalf("a limited fetch was counted as other")
	}
}

type okSource struct{ n atomic.Int64 }

func (s *okSource) Fetch(ctx context.Context, app string) (wechat.Token, error) {
	return wechat.Token{Value: "tok-" + string(rune('a'+s.n.Add(1))) + "-abcdefghijklmnop", ExpiresIn: 2 * time.Hour}, nil
}

// End to end on a real cache: a corrupt record in Redis is counted, and a
// report of a token that is not the current one is counted as ignored.
func TestARealCachesCorruptRecordIsCounted(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	m, reg := newTest(t)
	cache, err := tokencache.New(rdb, &okSource{}, tokencache.WithHooks(m.Hooks()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cache.Close() })
	m.SetCacheStats(cache.Admin().Stats)
	if err := mr.Set("tokenkeeper:{wxa}:token", "tk2|not a record"); err != nil {
		t.Fatal(err)
	}
	tok, err := cache.Token(context.Background(), "wxa")
	if err != nil {
		t.Fatalf("Token over a corrupt record: %v", err)
	}
	if _, err := cache.Invalidate(context.Background(), "wxa", "junk-"+tok.Value); err != nil {
		t.Fatalf("Invalidate of junk: %v", err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range s.GetLabel() {
				name += "{" + l.GetValue() + "}"
			}
			got[name] = s.GetCounter().GetValue()
		}
	}
	if got["tokenkeeper_cache_corrupt_records_total"] != 1 || got["tokenkeeper_invalidations_total{ignored}"] != 1 || got["tokenkeeper_fetches_total{wxa}{ok}"] != 1 {
		t.Fatalf("after a corrupt record, one fetch and one junk report: %v", got)
	}
}
