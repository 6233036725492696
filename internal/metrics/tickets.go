package metrics

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
)

// TicketGauge is one app's ticket of one kind at scrape time.
type TicketGauge struct {
	AppID, Kind string
	// HasTicket is false when none is stored: usable life is then 0, so
	// "usable < X" alerts fire.
	HasTicket bool
	UsableFor time.Duration
}

// TicketMetrics are the ticket caches' collectors, apart from the token
// metrics so that neither label set changes:
// tokenkeeper_ticket_fetches_total{app,kind,result} and
// tokenkeeper_ticket_usable_seconds{app,kind}.
type TicketMetrics struct {
	fetches *prometheus.CounterVec
	usable  ticketCollector
}

// NewTicketMetrics creates the ticket collectors and registers them on reg.
func NewTicketMetrics(reg prometheus.Registerer) (*TicketMetrics, error) {
	if reg == nil {
		return nil, errors.New("metrics: nil Registerer")
	}
	m := &TicketMetrics{fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "ticket_fetches_total",
		Help: "getticket calls sent by this process, by app, kind (jsapi, wx_card) and result (as tokenkeeper_fetches_total).",
	}, []string{"app", "kind", "result"})}
	m.usable.desc = prometheus.NewDesc(Namespace+"_ticket_usable_seconds",
		"Usable life left of the app's current ticket of the kind (0 when it has none).", []string{"app", "kind"}, nil)
	for _, c := range []prometheus.Collector{m.fetches, &m.usable} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// ObserveFetch counts one getticket attempt of a ticket cache.
func (m *TicketMetrics) ObserveFetch(ev tokencache.FetchEvent) {
	result := ev.Result
	if !fetchResults[result] && result != "token_invalid" { // getticket can refuse the access token
		result = "other"
	}
	m.fetches.WithLabelValues(ev.AppID, ev.Kind, result).Inc()
}

// SetSource sets what the usable-life gauge reads at scrape time.
func (m *TicketMetrics) SetSource(f func() []TicketGauge) { m.usable.source.Store(&f) }

type ticketCollector struct {
	source atomic.Pointer[func() []TicketGauge]
	desc   *prometheus.Desc
}

func (c *ticketCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *ticketCollector) Collect(ch chan<- prometheus.Metric) {
	f := c.source.Load()
	if f == nil {
		return
	}
	for _, g := range (*f)() {
		usable := 0.0
		if g.HasTicket {
			usable = max(g.UsableFor.Seconds(), 0)
		}
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, usable, g.AppID, g.Kind)
	}
}
