package deploy

import (
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tokenkeeper/tokenkeeper/internal/metrics"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
)

// family is one metric family the refresher exports.
type family struct {
	typ    dto.MetricType
	labels []string
	values map[string][]string // label -> the values this feeding brought out
}

// capture records the collectors metrics.New registers, so that every
// metric it declares is known even before it has a series.
type capture struct {
	*prometheus.Registry
	collectors []prometheus.Collector
}

func (c *capture) Register(col prometheus.Collector) error {
	c.collectors = append(c.collectors, col)
	return c.Registry.Register(col)
}

// exported returns the families internal/metrics exports, by name, from
// a registry fed one event of every kind, and fails if it declares a
// metric this feeding does not bring out (then extend the feeding).
func exported(t *testing.T) map[string]family {
	t.Helper()
	out := map[string]family{}
	var collectors []prometheus.Collector
	// Both series layouts: per app (small fleets) and aggregate (large
	// ones: histograms and the worst apps).
	for _, perApp := range []bool{true, false} {
		reg := &capture{Registry: prometheus.NewPedanticRegistry()}
		m, err := metrics.New(reg, metrics.WithPerApp(perApp))
		if err != nil {
			t.Fatal(err)
		}
		m.InitApps([]string{"wxa"})
		m.SetAppSource(func() []metrics.AppGauge {
			return []metrics.AppGauge{{AppID: "wxa", HasToken: true, UsableFor: time.Hour, Age: time.Minute, FetchesToday: 3}}
		})
		m.SetCacheStats(func() tokencache.Stats { return tokencache.Stats{} })
		m.ObserveFetch(tokencache.FetchEvent{AppID: "wxa", Result: "ok", Duration: time.Second})
		m.ObserveLockWait("wxa", time.Second)
		m.ObserveKilledOutside("wxa")
		m.ObserveRefresh("ok")
		m.ObserveHTTP("/v1/apps/{appid}/token", 200, time.Millisecond)
		m.SetLeader(true)

		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			f, ok := out[mf.GetName()]
			if !ok {
				f = family{typ: mf.GetType(), values: map[string][]string{}}
			}
			for _, mt := range mf.GetMetric() {
				for _, lp := range mt.GetLabel() {
					if !slices.Contains(f.labels, lp.GetName()) {
						f.labels = append(f.labels, lp.GetName())
					}
					if !slices.Contains(f.values[lp.GetName()], lp.GetValue()) {
						f.values[lp.GetName()] = append(f.values[lp.GetName()], lp.GetValue())
					}
				}
			}
			out[mf.GetName()] = f
		}
		collectors = append(collectors, reg.collectors...)
	}
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	for _, c := range collectors {
		ch := make(chan *prometheus.Desc, 64)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			name := fqName.FindStringSubmatch(d.String())
			if name == nil {
				t.Fatalf("cannot read the name of %s", d)
			}
			if _, ok := out[name[1]]; !ok {
				t.Errorf("internal/metrics declares %s, which this test does not bring out: feed it in exported()", name[1])
			}
		}
	}
	if len(out) < 10 {
		t.Fatalf("only %d families gathered: %v", len(out), out)
	}
	return out
}

// keptFetchResult reports whether metrics keeps result as its own
// "result" label value of fetches_total (values it does not know become
// "other").
func keptFetchResult(t *testing.T, result string) bool {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.ObserveFetch(tokencache.FetchEvent{AppID: "wxa", Result: result})
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != metrics.Namespace+"_fetches_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			for _, lp := range mt.GetLabel() {
				if lp.GetName() == "result" {
					return lp.GetValue() == result
				}
			}
		}
	}
	return false
}
