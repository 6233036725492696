package gateway

import (
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The children cache must count each label set on its own series, exactly,
// from many goroutines at once, and /metrics must show only the series that
// happened (nothing made ahead of use).
func TestMetricsCountEachLabelSetOnItsOwnSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	kinds := []struct {
		ex                 exchange
		class, code, retry string
		each               int
	}{
		{exchange{class: ClassBusiness, coded: true, errcode: 0, retry: RetryNone}, ClassBusiness, "0", RetryNone, 3},
		{exchange{class: ClassBusiness, coded: true, errcode: 0, retry: RetryDone}, ClassBusiness, "0", RetryDone, 2},
		{exchange{class: ClassBusiness, coded: true, errcode: 40001, retry: RetryNone}, ClassBusiness, "40001", RetryNone, 1},
		{exchange{class: ClassBusiness, coded: true, errcode: 12345, retry: RetryNone}, ClassBusiness, "other", RetryNone, 1},
		{exchange{class: ClassBusiness, retry: RetryNone}, ClassBusiness, "none", RetryNone, 1}, // errcode not read
		{exchange{class: ClassToken, coded: true, errcode: 40125, retry: RetryNone}, ClassToken, "40125", RetryNone, 2},
	}
	const goroutines = 8
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for _, k := range kinds {
				for range k.each {
					ex := k.ex
					m.observe(&ex, time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	for _, k := range kinds {
		if got, want := testutil.ToFloat64(m.requests.WithLabelValues(k.class, k.code, k.retry)), float64(goroutines*k.each); got != want {
			t.Errorf("requests{%s,%s,%s} = %v, want %v", k.class, k.code, k.retry, got, want)
		}
	}
	if n := testutil.CollectAndCount(m.requests); n != len(kinds) {
		t.Errorf("requests_total has %d series, want %d: one per label set that happened", n, len(kinds))
	}
	if n := testutil.CollectAndCount(m.duration); n != 2 {
		t.Errorf("request_duration_seconds has %d series, want 2 (business, token)", n)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "tokenkeeper_gateway_request_duration_seconds" {
			continue
		}
		want := map[string]uint64{ClassBusiness: goroutines * 8, ClassToken: goroutines * 2}
		for _, s := range mf.GetMetric() {
			class := s.GetLabel()[0].GetValue()
			if got := s.GetHistogram().GetSampleCount(); got != want[class] {
				t.Errorf("request_duration_seconds{%s} count = %d, want %d", class, got, want[class])
			}
		}
	}
}
