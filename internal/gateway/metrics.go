package gateway

import (
	"errors"
	"strconv"
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
	inFlight prometheus.Gauge
	rejected prometheus.Counter
	forced   *prometheus.CounterVec
	stale    prometheus.Counter
}

// errcodeLabels are the errcodes with a label of their own: the ones the
// gateway answers itself and the token and quota classes.
var errcodeLabels = map[int]bool{
	0: true, -1: true, 40001: true, 40002: true, 40013: true, 40014: true, 40066: true, 40097: true, 40125: true,
	40164: true, 41001: true, 41002: true, 41004: true, 42001: true, 43001: true, 43002: true, 44002: true,
	45001: true, 45009: true, 45011: true, 47001: true, 89503: true, 40029: true, 40163: true,
}

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
	switch {
	case !ex.coded:
	case errcodeLabels[ex.errcode]:
		code = strconv.Itoa(ex.errcode)
	default:
		code = "other"
	}
	m.requests.WithLabelValues(ex.class, code, ex.retry).Inc()
	m.duration.WithLabelValues(ex.class).Observe(took.Seconds())
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
