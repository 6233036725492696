package deploy

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
)

// evalStep is how often the simulated Prometheus evaluates the rules.
const evalStep = 15 * time.Second

// alertCase is one situation, as series in the notation of Prometheus's
// own rule tests (name{labels} 0+1x40: one sample a minute from 0),
// and the label sets the alert fires for at minute At (none: quiet).
type alertCase struct {
	alert, name string
	load        string
	at          int
	fires       []string
}

// base is a healthy three-replica fleet; cases add to it.
const base = `
  tokenkeeper_leader{instance="a"} 1x40
  tokenkeeper_leader{instance="b"} 0x40
  tokenkeeper_leader{instance="c"} 0x40
  tokenkeeper_leader_transitions_total{instance="a"} 1x40
  tokenkeeper_token_usable_seconds{app="wxa",instance="a"} 3000x40
  tokenkeeper_token_usable_seconds{app="wxa",instance="b"} 3000x40
  tokenkeeper_quota_used_today{app="wxa",instance="a"} 12x40
  tokenkeeper_fetches_total{app="wxa",result="ok",instance="a"} 0+1x40
  tokenkeeper_tokens_killed_outside_total{app="wxa",instance="a"} 0x40
  tokenkeeper_cache_revalidations_total{result="ok",instance="a"} 0+100x40
  tokenkeeper_cache_revalidations_total{result="error",instance="a"} 0x40
  tokenkeeper_cache_corrupt_records_total{instance="a"} 0x40
  tokenkeeper_http_requests_total{route="/v1/apps/{appid}/token",code="200",instance="a"} 0+100x40
`

var alertCases = []alertCase{
	{"TokenkeeperNoLeader", "all replicas standby", `
  tokenkeeper_leader{instance="x"} 0x40`, 20, []string{"{}"}},
	{"TokenkeeperNoLeader", "no replica scraped at all", `
  up{job="tokenkeeper",instance="a"} 0x40`, 20, []string{"{}"}},
	{"TokenkeeperReplicasMissing", "no replica scraped at all", `
  up{job="tokenkeeper",instance="a"} 0x40`, 20, []string{"{}"}},
	{"TokenkeeperReplicasMissing", "one replica left", `
  tokenkeeper_leader{instance="x"} 1x40`, 20, []string{"{}"}},
	{"TokenkeeperSeveralLeaders", "two say they lead", base + `
  tokenkeeper_leader{instance="d"} 1x40`, 20, []string{"{}"}},
	{"TokenkeeperLeaderFlapping", "a change a minute", base + `
  tokenkeeper_leader_transitions_total{instance="b"} 0+1x40`, 20, []string{"{}"}},
	{"TokenkeeperNoUsableToken", "every replica sees none", base + `
  tokenkeeper_token_usable_seconds{app="wxb",instance="a"} 0x40
  tokenkeeper_token_usable_seconds{app="wxb",instance="b"} 0x40`, 20, []string{`{app="wxb"}`}},
	{"TokenkeeperNoUsableToken", "one replica sees a token", base + `
  tokenkeeper_token_usable_seconds{app="wxb",instance="a"} 0x40
  tokenkeeper_token_usable_seconds{app="wxb",instance="b"} 3000x40`, 20, nil},
	{"TokenkeeperRefreshOverdue", "three minutes left", base + `
  tokenkeeper_token_usable_seconds{app="wxb",instance="a"} 180x40`, 20, []string{`{app="wxb"}`}},
	{"TokenkeeperRefreshOverdue", "none left is the other alert", base + `
  tokenkeeper_token_usable_seconds{app="wxb",instance="a"} 0x40`, 20, nil},
	{"TokenkeeperConfigError", "WeChat refused the secret", base + `
  tokenkeeper_fetches_total{app="wxb",result="config",instance="a"} 0x15 1x25`, 20, []string{`{app="wxb"}`}},
	{"TokenkeeperConfigError", "long ago", base + `
  tokenkeeper_fetches_total{app="wxb",result="config",instance="a"} 0x2 1x38`, 30, nil},
	{"TokenkeeperQuotaExhausted", "the fleet's budget", base + `
  tokenkeeper_fetches_total{app="wxb",result="budget",instance="b"} 0x15 1x25`, 20, []string{`{app="wxb"}`}},
	{"TokenkeeperFetchesFailing", "all transient", base + `
  tokenkeeper_fetches_total{app="wxb",result="transient",instance="a"} 0+1x40`, 20, []string{`{app="wxb"}`}},
	{"TokenkeeperFetchesFailing", "half of them", base + `
  tokenkeeper_fetches_total{app="wxb",result="transient",instance="a"} 0+1x40
  tokenkeeper_fetches_total{app="wxb",result="ok",instance="a"} 0+1x40`, 20, nil},
	{"TokenkeeperHighQuotaUse", "a passive-refresh loop", base + `
  tokenkeeper_quota_used_today{app="wxb",instance="a"} 250x40`, 20, []string{`{app="wxb"}`}},
	{"TokenkeeperTokenKilledOutside", "another system fetched", base + `
  tokenkeeper_tokens_killed_outside_total{app="wxb",instance="a"} 0x15 1x25`, 20, []string{`{app="wxb"}`}},
	{"TokenkeeperRedisUnreachable", "revalidations fail", base + `
  tokenkeeper_cache_revalidations_total{result="error",instance="b"} 0+10x40`, 20, []string{`{instance="b"}`}},
	{"TokenkeeperCorruptRecords", "junk under the prefix", base + `
  tokenkeeper_cache_corrupt_records_total{instance="b"} 0x15 3x25`, 20, []string{"{}"}},
	{"TokenkeeperHTTPErrors", "half the requests fail", base + `
  tokenkeeper_http_requests_total{route="/v1/apps/{appid}/token",code="503",instance="b"} 0+100x40`, 20, []string{"{}"}},
	{"TokenkeeperHTTPErrors", "one in a thousand", base + `
  tokenkeeper_http_requests_total{route="/v1/apps/{appid}/token",code="503",instance="b"} 0+0.1x40`, 20, nil},
}

// firing evaluates the alert's expression as Prometheus would every
// evalStep, and returns the label sets for which it held at every
// evaluation of the last For (its pending period) up to at.
func firing(t *testing.T, ng *promql.Engine, st storage.Queryable, r rulefmt.Rule, at time.Time) []string {
	t.Helper()
	var held map[string]bool
	for ts := at.Add(-time.Duration(r.For)); !ts.After(at); ts = ts.Add(evalStep) {
		q, err := ng.NewInstantQuery(context.Background(), st, nil, r.Expr, ts)
		if err != nil {
			t.Fatalf("%s: %v", r.Alert, err)
		}
		res := q.Exec(context.Background())
		if res.Err != nil {
			t.Fatalf("%s at %v: %v", r.Alert, ts, res.Err)
		}
		vec, err := res.Vector()
		if err != nil {
			t.Fatalf("%s: %v", r.Alert, err)
		}
		now := map[string]bool{}
		for _, s := range vec {
			now[s.Metric.DropReserved(func(n string) bool { return n == model.MetricNameLabel }).String()] = true
		}
		if held == nil {
			held = now
		}
		for k := range held {
			if !now[k] {
				delete(held, k)
			}
		}
		q.Close()
	}
	var out []string
	for k := range held {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestAlertRulesFire evaluates every alert of alerts.yml with Prometheus's
// own engine, pending period included, on situations it must fire for
// (with the right labels) and near misses it must not; a healthy fleet
// fires nothing. Every alert needs at least one firing case here.
func TestAlertRulesFire(t *testing.T) {
	groups, errs := rulefmt.ParseFile(alertsFile, false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if len(errs) > 0 {
		t.Fatalf("%v", errs)
	}
	rules := map[string]rulefmt.Rule{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			rules[r.Alert] = r
		}
	}
	ng := promql.NewEngine(promql.EngineOpts{MaxSamples: 50000, Timeout: 10 * time.Second, LookbackDelta: 5 * time.Minute})
	at := func(min int) time.Time { return time.Unix(0, 0).UTC().Add(time.Duration(min) * time.Minute) }

	healthy := load(t, base)
	for name, r := range rules {
		if got := firing(t, ng, healthy, r, at(20)); len(got) > 0 {
			t.Errorf("%s fires on a healthy fleet: %v", name, got)
		}
	}

	covered := map[string]bool{}
	for _, c := range alertCases {
		r, ok := rules[c.alert]
		if !ok {
			t.Errorf("case %q: no alert %s in %s", c.name, c.alert, alertsFile)
			continue
		}
		st := load(t, c.load)
		got := firing(t, ng, st, r, at(c.at))
		want := slices.Clone(c.fires)
		sort.Strings(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s, %s: fires for %v, want %v", c.alert, c.name, got, want)
		}
		if len(c.fires) > 0 {
			covered[c.alert] = true
		}
	}
	for name := range rules {
		if !covered[name] {
			t.Errorf("%s has no case it fires for in alertCases", name)
		}
	}
}

// load turns series lines (parsed by PromQL's own series notation parser)
// into a storage holding one sample a minute from time 0. It stands for
// promqltest's storage, which would link the whole TSDB and, through
// Prometheus's config, the cloud SDKs.
func load(t *testing.T, text string) storage.Queryable {
	t.Helper()
	p := parser.NewParser(parser.Options{})
	var series []storage.Series
	for _, line := range strings.Split(text, "\n") {
		if line = strings.TrimSpace(line); line == "" {
			continue
		}
		lset, vals, err := p.ParseSeriesDesc(line)
		if err != nil {
			t.Fatalf("series %q: %v", line, err)
		}
		var samples []chunks.Sample
		for i, v := range vals {
			if !v.Omitted {
				samples = append(samples, fsample{t: int64(i) * time.Minute.Milliseconds(), f: v.Value})
			}
		}
		series = append(series, storage.NewListSeries(lset, samples))
	}
	return &storage.MockQueryable{MockQuerier: &storage.MockQuerier{
		SelectMockFunction: func(_ bool, _ *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
			var out []storage.Series
			for _, s := range series {
				if matchAll(s.Labels(), ms) {
					out = append(out, s)
				}
			}
			slices.SortFunc(out, func(a, b storage.Series) int { return labels.Compare(a.Labels(), b.Labels()) })
			return &seriesSet{series: out, i: -1}
		},
	}}
}

func matchAll(lset labels.Labels, ms []*labels.Matcher) bool {
	for _, m := range ms {
		if !m.Matches(lset.Get(m.Name)) {
			return false
		}
	}
	return true
}

// fsample is one float sample.
type fsample struct {
	t int64
	f float64
}

func (s fsample) T() int64                      { return s.t }
func (s fsample) ST() int64                     { return 0 }
func (s fsample) F() float64                    { return s.f }
func (s fsample) H() *histogram.Histogram       { return nil }
func (s fsample) FH() *histogram.FloatHistogram { return nil }
func (s fsample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s fsample) Copy() chunks.Sample           { return s }

// seriesSet iterates a sorted slice of series.
type seriesSet struct {
	series []storage.Series
	i      int
}

func (s *seriesSet) Next() bool                        { s.i++; return s.i < len(s.series) }
func (s *seriesSet) At() storage.Series                { return s.series[s.i] }
func (s *seriesSet) Err() error                        { return nil }
func (s *seriesSet) Warnings() annotations.Annotations { return nil }
