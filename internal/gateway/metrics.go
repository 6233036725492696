package gateway

import (
	"errors"
	"maps"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenkeeper/tokenkeeper/internal/metrics"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// Metrics are the gateway's collectors, in internal/metrics' style: built
// on a Registerer the caller supplies, safe on a nil *Metrics. The series
// (prefixed tokenkeeper_gateway_):
//
//	requests_total{class,errcode,retry}  counter: requests by path class, errcode ("none" when the reply had none
//	                                     that could be read, e.g. media; "other" for codes outside errcodeLabels)
//	                                     and retry outcome (none, retried, not_retryable, no_replacement, report_failed)
//	request_duration_seconds{class}      histogram
//	in_flight                            gauge: requests being served
//	rejected_total                       counter: requests refused at the concurrency limit
//	force_refresh_total{result}          counter: stable_token force_refresh reports (ok, or wechat.ClassName)
//	stale_replaced_total                 counter: business calls whose caller held an earlier token than the
//	                                     current one, sent upstream with the current one instead
//
// No label holds a token, a credential or an appid.
type Metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	// The children of requests and duration by label set, so that a
	// request costs a map read instead of WithLabelValues' validation,
	// hashing and locking.
	requestsBy children[requestLabels, prometheus.Counter]
	durationBy children[string, prometheus.Observer]
	inFlight   prometheus.Gauge
	rejected   prometheus.Counter
	forced     *prometheus.CounterVec
	stale      prometheus.Counter
}

// requestLabels are the labels of requests_total.
type requestLabels struct{ class, errcode, retry string }

// errcodeLabels are the errcodes with a label of their own (the ones the
// gateway answers itself and the token and quota classes), each with its
// label.
var errcodeLabels = func() map[int]string {
	m := map[int]string{}
	for _, code := range []int{
		0, -1, 40001, 40002, 40013, 40014, 40066, 40097, 40125, 40164, 41001, 41002, 41004, 42001,
		43001, 43002, 44002, 45001, 45009, 45011, 47001, 89503, 40029, 40163,
	} {
		m[code] = strconv.Itoa(code)
	}
	return m
}()

// NewMetrics creates the collectors and registers them on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	if reg == nil {
		return nil, errors.New("gateway: nil Registerer")
	}
	ns := metrics.Namespace
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "gateway", Name: "requests_total",
			Help: "Gateway requests by path class, errcode and retry outcome."}, []string{"class", "errcode", "retry"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: "gateway", Name: "request_duration_seconds",
			Help: "Gateway request duration by path class.", Buckets: []float64{.0005, .001, .0025, .005, .01, .05, .1, .5, 1, 5, 30}}, []string{"class"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: "gateway", Name: "in_flight",
			Help: "Gateway requests being served."}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "gateway", Name: "rejected_total",
			Help: "Gateway requests refused at the concurrency limit (gateway.max_concurrent)."}),
		forced: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "gateway", Name: "force_refresh_total",
			Help: "stable_token force_refresh calls, each a report through the verified invalidate path, by result."}, []string{"result"}),
		stale: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "gateway", Name: "stale_replaced_total",
			Help: "Business calls whose caller held an earlier token, sent upstream with the current one instead."}),
	}
	m.requestsBy.newChild = func(l requestLabels) prometheus.Counter {
		return m.requests.WithLabelValues(l.class, l.errcode, l.retry)
	}
	m.durationBy.newChild = func(class string) prometheus.Observer { return m.duration.WithLabelValues(class) }
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.inFlight, m.rejected, m.forced, m.stale} {
		if err := reg.Register(c); err != nil {
			return nil, errors.New("gateway: register metrics: " + err.Error())
		}
	}
	return m, nil
}

func (m *Metrics) observe(ex *exchange, took time.Duration) {
	if m == nil {
		return
	}
	code := "none"
	if ex.coded {
		var ok bool
		if code, ok = errcodeLabels[ex.errcode]; !ok {
			code = "other"
		}
	}
	m.requestsBy.get(requestLabels{ex.class, code, ex.retry}).Inc()
	m.durationBy.get(ex.class).Observe(took.Seconds())
}

// children holds the children of a metric vector by label set, read with
// one atomic load and a map read. It is for label sets drawn from fixed,
// small sets (the classes, errcode labels and retry outcomes here), so it
// stays small; a child is made on first use, so /metrics still shows only
// the series that happened.
type children[K comparable, V any] struct {
	m        atomic.Pointer[map[K]V] // never modified once stored
	mu       sync.Mutex              // serialises adding
	newChild func(K) V
}

func (c *children[K, V]) get(k K) V {
	if m := c.m.Load(); m != nil {
		if v, ok := (*m)[k]; ok {
			return v
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.m.Load()
	if old != nil {
		if v, ok := (*old)[k]; ok {
			return v
		}
	}
	next := make(map[K]V, 1)
	if old != nil {
		next = maps.Clone(*old)
	}
	v := c.newChild(k)
	next[k] = v
	c.m.Store(&next)
	return v
}

func (m *Metrics) inFlightAdd(d float64) {
	if m != nil {
		m.inFlight.Add(d)
	}
}

func (m *Metrics) reject() {
	if m != nil {
		m.rejected.Inc()
	}
}

func (m *Metrics) forceRefresh(err error) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = wechat.ClassName(err)
	}
	m.forced.WithLabelValues(result).Inc()
}

func (m *Metrics) staleReplaced() {
	if m != nil {
		m.stale.Inc()
	}
}
