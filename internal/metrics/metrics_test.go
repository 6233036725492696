package metrics

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
)

const (
	secretToken = "ACCESS_TOKEN_abcdefghijklmnopqrstuvwxyz0123456789"
	secretValue = "f1e2d3c4b5a6978812345678abcdef00"
)

func newTest(t *testing.T) (*Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	m, err := New(reg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m, reg
}

func TestFetchesAndLockWaits(t *testing.T) {
	m, reg := newTest(t)
	h := m.Hooks()
	h.OnFetch(tokencache.FetchEvent{AppID: "wxa", Result: "ok", Duration: 30 * time.Millisecond})
	h.OnFetch(tokencache.FetchEvent{AppID: "wxa", Result: "ok", Duration: 40 * time.Millisecond})
	h.OnFetch(tokencache.FetchEvent{AppID: "wxb", Result: "quota", Duration: 20 * time.Millisecond, Err: errors.New("errcode 45009")})
	h.OnFetch(tokencache.FetchEvent{AppID: "wxb", Result: "something new", Duration: time.Millisecond})
	h.OnLockWait("wxa", 300*time.Millisecond)
	h.OnLockWait("wxb", 3*time.Second)

	err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP tokenkeeper_fetches_total Upstream token fetches sent by this process, by app and result (ok, refused, transient, quota, config, budget, limited, error, other).
# TYPE tokenkeeper_fetches_total counter
tokenkeeper_fetches_total{app="wxa",result="ok"} 2
tokenkeeper_fetches_total{app="wxb",result="other"} 1
tokenkeeper_fetches_total{app="wxb",result="quota"} 1
# HELP tokenkeeper_lock_waits_total Times a caller waited for another holder's fetch of the app's token.
# TYPE tokenkeeper_lock_waits_total counter
tokenkeeper_lock_waits_total{app="wxa"} 1
tokenkeeper_lock_waits_total{app="wxb"} 1
# HELP tokenkeeper_lock_wait_duration_seconds How long callers waited for another holder's fetch.
# TYPE tokenkeeper_lock_wait_duration_seconds histogram
tokenkeeper_lock_wait_duration_seconds_bucket{le="0.01"} 0
tokenkeeper_lock_wait_duration_seconds_bucket{le="0.05"} 0
tokenkeeper_lock_wait_duration_seconds_bucket{le="0.1"} 0
tokenkeeper_lock_wait_duration_seconds_bucket{le="0.25"} 0
tokenkeeper_lock_wait_duration_seconds_bucket{le="0.5"} 1
tokenkeeper_lock_wait_duration_seconds_bucket{le="1"} 1
tokenkeeper_lock_wait_duration_seconds_bucket{le="2.5"} 1
tokenkeeper_lock_wait_duration_seconds_bucket{le="5"} 2
tokenkeeper_lock_wait_duration_seconds_bucket{le="10"} 2
tokenkeeper_lock_wait_duration_seconds_bucket{le="20"} 2
tokenkeeper_lock_wait_duration_seconds_bucket{le="+Inf"} 2
tokenkeeper_lock_wait_duration_seconds_sum 3.3
tokenkeeper_lock_wait_duration_seconds_count 2
`), "tokenkeeper_fetches_total", "tokenkeeper_lock_waits_total", "tokenkeeper_lock_wait_duration_seconds")
	if err != nil {
		t.Fatal(err)
	}
	if got := testutil.CollectAndCount(m.fetchDuration, "tokenkeeper_fetch_duration_seconds"); got != 3 {
		t.Fatalf("fetch duration: %d series; want one per result seen (ok, quota, other)", got)
	}
}

func TestLeaderStateAndTransitions(t *testing.T) {
	m, reg := newTest(t)
	for _, leading := range []bool{false, true, true, false, true} {
		m.SetLeader(leading)
	}
	// false→false is no transition; then gained, kept, lost, gained.
	err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP tokenkeeper_leader 1 while this replica leads (runs the refresh scheduler), else 0.
# TYPE tokenkeeper_leader gauge
tokenkeeper_leader 1
# HELP tokenkeeper_leader_transitions_total Times this replica gained or lost the lead.
# TYPE tokenkeeper_leader_transitions_total counter
tokenkeeper_leader_transitions_total 3
`), "tokenkeeper_leader", "tokenkeeper_leader_transitions_total")
	if err != nil {
		t.Fatal(err)
	}
	m.SetLeader(false)
	if got := testutil.ToFloat64(m.leader); got != 0 {
		t.Fatalf("leader gauge %v after losing the lead; want 0", got)
	}
}

func TestHTTPRequests(t *testing.T) {
	m, reg := newTest(t)
	m.ObserveHTTP("/v1/apps/{appid}/token", 200, 2*time.Millisecond)
	m.ObserveHTTP("/v1/apps/{appid}/token", 200, 3*time.Millisecond)
	m.ObserveHTTP("/v1/apps/{appid}/token", 401, time.Millisecond)
	m.ObserveHTTP("/healthz", 200, time.Millisecond)
	err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP tokenkeeper_http_requests_total HTTP API requests by route pattern and status code.
# TYPE tokenkeeper_http_requests_total counter
tokenkeeper_http_requests_total{code="200",route="/healthz"} 1
tokenkeeper_http_requests_total{code="200",route="/v1/apps/{appid}/token"} 2
tokenkeeper_http_requests_total{code="401",route="/v1/apps/{appid}/token"} 1
`), "tokenkeeper_http_requests_total")
	if err != nil {
		t.Fatal(err)
	}
	if got := testutil.CollectAndCount(m.httpDuration); got != 2 {
		t.Fatalf("http duration: %d series; want one per route", got)
	}
}

func TestSchedulerRefreshes(t *testing.T) {
	m, _ := newTest(t)
	m.ObserveRefresh("ok")
	m.ObserveRefresh("ok")
	m.ObserveRefresh("transient")
	if got := testutil.ToFloat64(m.schedulerRuns.WithLabelValues("ok")); got != 2 {
		t.Fatalf("ok refreshes = %v; want 2", got)
	}
	if got := testutil.ToFloat64(m.schedulerRuns.WithLabelValues("transient")); got != 1 {
		t.Fatalf("transient refreshes = %v; want 1", got)
	}
}

func TestAppGaugesAreReadAtScrapeTime(t *testing.T) {
	m, reg := newTest(t)
	// No source yet: no per-app series, and the scrape still works.
	if n, err := testutil.GatherAndCount(reg, "tokenkeeper_token_usable_seconds", "tokenkeeper_apps"); err != nil || n != 0 {
		t.Fatalf("before SetAppSource: %d series, err %v; want none", n, err)
	}
	var calls atomic.Int64
	m.SetAppSource(func() []AppGauge {
		c := calls.Add(1)
		return []AppGauge{
			{AppID: "wxa", HasToken: true, UsableFor: time.Duration(c) * time.Minute, Age: 90 * time.Second, FetchesToday: 7},
			{AppID: "wxb", HasToken: false, FetchesToday: -1}, // no token, Redis count unknown
		}
	})
	want := func(usable string) string {
		return `
# HELP tokenkeeper_apps Number of apps reported by the per-app source at this scrape.
# TYPE tokenkeeper_apps gauge
tokenkeeper_apps 2
# HELP tokenkeeper_quota_used_today Upstream fetches by the whole fleet for the app in the current Beijing day.
# TYPE tokenkeeper_quota_used_today gauge
tokenkeeper_quota_used_today{app="wxa"} 7
# HELP tokenkeeper_token_age_seconds Time since the app's current token was fetched.
# TYPE tokenkeeper_token_age_seconds gauge
tokenkeeper_token_age_seconds{app="wxa"} 90
# HELP tokenkeeper_token_usable_seconds Usable life left of the app's current token (0 when it has none).
# TYPE tokenkeeper_token_usable_seconds gauge
tokenkeeper_token_usable_seconds{app="wxa"} ` + usable + `
tokenkeeper_token_usable_seconds{app="wxb"} 0
`
	}
	names := []string{"tokenkeeper_apps", "tokenkeeper_quota_used_today", "tokenkeeper_token_age_seconds", "tokenkeeper_token_usable_seconds"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want("60")), names...); err != nil {
		t.Fatalf("first scrape: %v", err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want("120")), names...); err != nil {
		t.Fatalf("second scrape (the source must be read again): %v", err)
	}
	if c := calls.Load(); c != 2 {
		t.Fatalf("source called %d times for 2 scrapes", c)
	}
}

// Feed every input a token or secret could sneak in through, then check
// every label value and sample of every series.
func TestNoTokenOrSecretInAnyLabel(t *testing.T) {
	m, reg := newTest(t)
	leak := errors.New("upstream said: token " + secretToken + " secret " + secretValue)
	for _, r := range []string{"ok", "refused", "transient", "quota", "config", "budget", "error", secretToken} {
		m.ObserveFetch(tokencache.FetchEvent{AppID: "wxa", Result: r, Duration: time.Second, Err: leak})
	}
	m.ObserveLockWait("wxa", time.Second)
	m.SetLeader(true)
	m.ObserveRefresh("transient")
	m.ObserveHTTP("/v1/apps/{appid}/token", 200, time.Millisecond)
	m.SetAppSource(func() []AppGauge {
		return []AppGauge{{AppID: "wxa", HasToken: true, UsableFor: time.Hour, FetchesToday: 1}}
	})
	m.SetCacheStats(func() tokencache.Stats { return tokencache.Stats{CorruptRecords: 1, InvalidationsIgnored: 2} })
	m.ObserveKilledOutside("wxa")

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := 0
	for _, mf := range mfs {
		for _, metric := range mf.GetMetric() {
			series++
			for _, lp := range metric.GetLabel() {
				for _, bad := range []string{secretToken, secretValue} {
					if strings.Contains(lp.GetValue(), bad) || strings.Contains(lp.GetName(), bad) {
						t.Errorf("%s: label %s=%q carries a secret", mf.GetName(), lp.GetName(), lp.GetValue())
					}
				}
			}
		}
	}
	if series < 15 {
		t.Fatalf("only %d series gathered; the check saw too little to mean anything", series)
	}
}

func TestNilMetricsIsANoOp(t *testing.T) {
	var m *Metrics
	m.ObserveFetch(tokencache.FetchEvent{AppID: "wxa", Result: "ok"})
	m.ObserveLockWait("wxa", time.Second)
	m.SetLeader(true)
	m.ObserveRefresh("ok")
	m.ObserveHTTP("r", 200, time.Second)
	m.SetAppSource(func() []AppGauge { return nil })
	m.SetCacheStats(func() tokencache.Stats { return tokencache.Stats{} })
	m.InitApps([]string{"wxa"})
	m.ObserveKilledOutside("wxa")
	m.Hooks().OnFetch(tokencache.FetchEvent{AppID: "wxa"})
	m.Hooks().OnKilledOutside("wxa")
}

func TestNewRejectsNilAndDoubleRegistration(t *testing.T) {
	if _, err := New(nil); err == nil {
		t.Fatal("New(nil) succeeded")
	}
	reg := prometheus.NewRegistry()
	if _, err := New(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := New(reg); err == nil || !strings.Contains(err.Error(), "register") {
		t.Fatalf("second New on one registry: %v; want a registration error", err)
	}
}

func TestMetricNamesPassPromlint(t *testing.T) {
	m, reg := newTest(t)
	m.ObserveFetch(tokencache.FetchEvent{AppID: "wxa", Result: "ok"})
	m.ObserveLockWait("wxa", time.Second)
	m.ObserveHTTP("r", 200, time.Second)
	m.ObserveRefresh("ok")
	m.SetAppSource(func() []AppGauge { return []AppGauge{{AppID: "wxa", HasToken: true, FetchesToday: 1}} })
	m.SetCacheStats(func() tokencache.Stats { return tokencache.Stats{CorruptRecords: 1} })
	m.ObserveKilledOutside("wxa")
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}
