package metrics

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
)

// fakeKnower answers Known from a map.
type fakeKnower map[string]tokencache.Known

func (f fakeKnower) Known(app string) (tokencache.Known, bool) {
	k, ok := f[app]
	return k, ok
}

// TestAggregateSeries: without per-app series, usable life and age are
// histograms over the known apps, only the worst apps (least usable life)
// have token series, an unknown app is counted as such (not as a token of
// 0 s), and fetches and lock waits carry no app label.
func TestAggregateSeries(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := New(reg, WithPerApp(false), WithWorstApps(2))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	k := fakeKnower{
		"wxa": {UsableUntil: now.Add(100 * time.Second), FetchedAt: now.Add(-7000 * time.Second)},
		"wxb": {UsableUntil: now.Add(7000 * time.Second), FetchedAt: now.Add(-100 * time.Second)},
		"wxc": {UsableUntil: now.Add(-time.Second), FetchedAt: now.Add(-8000 * time.Second)}, // run out
		"wxd": {UsableUntil: now.Add(4000 * time.Second), FetchedAt: now.Add(-3000 * time.Second)},
		// wxe: unknown
	}
	m.SetAppSource(KnownSource(k, func() []string { return []string{"wxa", "wxb", "wxc", "wxd", "wxe"} }, func() time.Time { return now }))
	m.ObserveFetch(tokencache.FetchEvent{AppID: "wxa", Result: "ok"})
	m.ObserveFetch(tokencache.FetchEvent{AppID: "wxb", Result: "ok"})
	m.ObserveLockWait("wxa", time.Second)
	m.InitApps([]string{"wxa", "wxb"})
	err = testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP tokenkeeper_apps Number of apps reported by the per-app source at this scrape.
# TYPE tokenkeeper_apps gauge
tokenkeeper_apps 5
# HELP tokenkeeper_apps_unknown Apps of which this process knows no token (it never read or was told of one): in no token series.
# TYPE tokenkeeper_apps_unknown gauge
tokenkeeper_apps_unknown 1
# HELP tokenkeeper_fetches_total Upstream token fetches sent by this process, by result (ok, refused, transient, quota, config, budget, limited, error, other).
# TYPE tokenkeeper_fetches_total counter
tokenkeeper_fetches_total{result="ok"} 2
# HELP tokenkeeper_lock_waits_total Times a caller waited for another holder's fetch of the app's token.
# TYPE tokenkeeper_lock_waits_total counter
tokenkeeper_lock_waits_total 1
# HELP tokenkeeper_token_age_seconds Time since the app's (only the apps with the least usable life left are reported) current token was fetched.
# TYPE tokenkeeper_token_age_seconds gauge
tokenkeeper_token_age_seconds{app="wxa"} 7000
# HELP tokenkeeper_token_usable_seconds Usable life left of the app's (only the apps with the least usable life left are reported) current token (0 when it has none).
# TYPE tokenkeeper_token_usable_seconds gauge
tokenkeeper_token_usable_seconds{app="wxa"} 100
tokenkeeper_token_usable_seconds{app="wxc"} 0
# HELP tokenkeeper_tokens_age_seconds Distribution over the apps with a token of the time since it was fetched.
# TYPE tokenkeeper_tokens_age_seconds histogram
tokenkeeper_tokens_age_seconds_bucket{le="60"} 0
tokenkeeper_tokens_age_seconds_bucket{le="300"} 1
tokenkeeper_tokens_age_seconds_bucket{le="600"} 1
tokenkeeper_tokens_age_seconds_bucket{le="1200"} 1
tokenkeeper_tokens_age_seconds_bucket{le="1800"} 1
tokenkeeper_tokens_age_seconds_bucket{le="3600"} 2
tokenkeeper_tokens_age_seconds_bucket{le="5400"} 2
tokenkeeper_tokens_age_seconds_bucket{le="7200"} 3
tokenkeeper_tokens_age_seconds_bucket{le="+Inf"} 3
tokenkeeper_tokens_age_seconds_sum 10100
tokenkeeper_tokens_age_seconds_count 3
# HELP tokenkeeper_tokens_usable_seconds Distribution over the known apps of their current token's usable life left (0 without a token).
# TYPE tokenkeeper_tokens_usable_seconds histogram
tokenkeeper_tokens_usable_seconds_bucket{le="0"} 1
tokenkeeper_tokens_usable_seconds_bucket{le="60"} 1
tokenkeeper_tokens_usable_seconds_bucket{le="120"} 2
tokenkeeper_tokens_usable_seconds_bucket{le="300"} 2
tokenkeeper_tokens_usable_seconds_bucket{le="600"} 2
tokenkeeper_tokens_usable_seconds_bucket{le="1200"} 2
tokenkeeper_tokens_usable_seconds_bucket{le="1800"} 2
tokenkeeper_tokens_usable_seconds_bucket{le="3600"} 2
tokenkeeper_tokens_usable_seconds_bucket{le="5400"} 3
tokenkeeper_tokens_usable_seconds_bucket{le="7200"} 4
tokenkeeper_tokens_usable_seconds_bucket{le="+Inf"} 4
tokenkeeper_tokens_usable_seconds_sum 11100
tokenkeeper_tokens_usable_seconds_count 4
`), "tokenkeeper_apps", "tokenkeeper_apps_unknown", "tokenkeeper_fetches_total", "tokenkeeper_lock_waits_total",
		"tokenkeeper_token_age_seconds", "tokenkeeper_token_usable_seconds", "tokenkeeper_tokens_age_seconds", "tokenkeeper_tokens_usable_seconds",
		"tokenkeeper_tokens_killed_outside_total", "tokenkeeper_quota_used_today")
	if err != nil {
		t.Fatal(err)
	}
}

// TestKeepWorst: the n apps with the least usable life, in order, ties by
// appid, whatever the order they come in.
func TestKeepWorst(t *testing.T) {
	var all []AppGauge
	for i := range 50 {
		all = append(all, AppGauge{AppID: fmt.Sprintf("wx%02d", i), HasToken: true, UsableFor: time.Duration((i*37)%50) * time.Second})
	}
	all = append(all, AppGauge{AppID: "wx00b", HasToken: true, UsableFor: time.Second}) // ties wx23
	var worst []*AppGauge
	for i := range all {
		worst = keepWorst(worst, &all[i], 3)
	}
	var got []string
	for _, a := range worst {
		got = append(got, fmt.Sprintf("%s:%v", a.AppID, a.UsableFor))
	}
	if want := "wx00:0s wx00b:1s wx23:1s"; strings.Join(got, " ") != want {
		t.Fatalf("worst = %v; want %s", got, want)
	}
}

// BenchmarkScrape100kApps gathers /metrics for 100,000 apps from a memory
// source: the aggregate default for such a fleet against per-app series.
// Reported: bytes of the text exposition per scrape.
func BenchmarkScrape100kApps(b *testing.B) {
	const n = 100_000
	now := time.Now()
	k := fakeKnower{}
	apps := make([]string, n)
	for i := range apps {
		apps[i] = fmt.Sprintf("wx%016d", i)
		if i%10 != 0 { // a tenth unknown
			k[apps[i]] = tokencache.Known{UsableUntil: now.Add(time.Duration(i%7200) * time.Second), FetchedAt: now.Add(-time.Duration(i%600) * time.Second)}
		}
	}
	for _, perApp := range []bool{false, true} {
		b.Run(fmt.Sprint("per-app=", perApp), func(b *testing.B) {
			reg := prometheus.NewRegistry()
			m, err := New(reg, WithPerApp(perApp))
			if err != nil {
				b.Fatal(err)
			}
			m.SetAppSource(KnownSource(k, func() []string { return apps }, nil))
			m.InitApps(apps)
			var size int
			b.ReportAllocs()
			for b.Loop() {
				mfs, err := reg.Gather()
				if err != nil {
					b.Fatal(err)
				}
				size = 0
				for _, mf := range mfs {
					size += len(mf.String())
				}
			}
			b.ReportMetric(float64(size), "bytes/scrape")
		})
	}
}
