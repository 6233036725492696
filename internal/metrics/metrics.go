package metrics

import (
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
)

// Namespace prefixes every metric name.
const Namespace = "tokenkeeper"

// AppGauge is one app's state at scrape time.
type AppGauge struct {
	AppID string
	// Unknown is true when the process knows nothing of the app's token
	// (a replica that never served it): the app is counted in apps_unknown
	// and in no token series, rather than reported as a misleading 0.
	Unknown bool
	// HasToken is false when no usable token is stored: usable life is
	// then reported as 0 (so "usable < X" alerts fire) and the age series
	// is left out rather than reported as a misleading 0.
	HasToken bool
	// UsableFor is how long the current token will still be handed out.
	UsableFor time.Duration
	// Age is how long ago the current token was fetched.
	Age time.Duration
	// FetchesToday counts upstream fetches by the whole fleet in the
	// current Beijing day; negative means unknown (e.g. Redis unreachable)
	// and leaves the series out.
	FetchesToday int64
}

// Metrics is the set of tokenkeeper collectors. Build it with New.
type Metrics struct {
	fetches           *prometheus.CounterVec
	fetchDuration     *prometheus.HistogramVec
	lockWaits         *prometheus.CounterVec
	lockWaitDuration  prometheus.Histogram
	leader            prometheus.Gauge
	leaderTransitions prometheus.Counter
	httpRequests      *prometheus.CounterVec
	httpDuration      *prometheus.HistogramVec
	schedulerRuns     *prometheus.CounterVec
	killedOutside     *prometheus.CounterVec

	isLeader atomic.Bool
	leaderMu sync.Mutex // orders SetLeader's compare and counter update

	perApp bool // fetches and lock waits by app; every app's token series

	apps  appCollector
	cache cacheCollector
}

// Option configures Metrics.
type Option func(*options)

type options struct {
	perApp bool
	worst  int
}

// WithPerApp chooses the series of a fleet. On (New's default): every
// app's own token_usable_seconds, token_age_seconds and quota_used_today,
// and fetches_total and lock_waits_total by app. Off: the distributions of
// usable life and token age over all apps (tokens_usable_seconds,
// tokens_age_seconds histograms) and the token series of only the worst
// apps (least usable life first, WithWorstApps), and fetches_total and
// lock_waits_total without the app label. Off fits a fleet of any size
// in a fixed number of series; on costs a dozen series per app.
func WithPerApp(on bool) Option { return func(o *options) { o.perApp = on } }

// WithWorstApps sets how many apps the aggregate mode (WithPerApp(false))
// names in token_usable_seconds{app} and token_age_seconds{app}: those
// with the least usable life left (default DefaultWorstApps).
func WithWorstApps(n int) Option { return func(o *options) { o.worst = n } }

// DefaultWorstApps is how many apps the aggregate mode names by default.
const DefaultWorstApps = 20

// PerAppLimit is the largest fleet that gets per-app series by default
// (PerAppFor): about a dozen series per app keeps 500 apps within a usual
// Prometheus budget of 10,000 series per target.
const PerAppLimit = 500

// PerAppFor is the default choice of WithPerApp for a fleet of n apps.
func PerAppFor(n int) bool { return n <= PerAppLimit }

// fetchResults are the FetchEvent.Result values tokencache documents; any
// other value is counted as "other" so a library change cannot blow up the
// label set.
var fetchResults = map[string]bool{
	"ok": true, "refused": true, "transient": true, "quota": true,
	"config": true, "budget": true, "limited": true, "error": true,
}

// New creates the collectors and registers them on reg. It fails if any of
// them is already registered there.
func New(reg prometheus.Registerer, opts ...Option) (*Metrics, error) {
	if reg == nil {
		return nil, errors.New("metrics: nil Registerer")
	}
	o := options{perApp: true, worst: DefaultWorstApps}
	for _, opt := range opts {
		opt(&o)
	}
	if o.worst < 0 {
		return nil, errors.New("metrics: WithWorstApps: must not be negative")
	}
	fetchLabels, lockLabels, by := []string{"app", "result"}, []string{"app"}, "by app and result"
	if !o.perApp {
		fetchLabels, lockLabels, by = []string{"result"}, nil, "by result"
	}
	m := &Metrics{
		perApp: o.perApp,
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "fetches_total",
			Help: "Upstream token fetches sent by this process, " + by + " (ok, refused, transient, quota, config, budget, limited, error, other).",
		}, fetchLabels),
		fetchDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "fetch_duration_seconds",
			Help:    "Duration of upstream token fetches, by result.",
			Buckets: []float64{.025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"result"}),
		lockWaits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "lock_waits_total",
			Help: "Times a caller waited for another holder's fetch of the app's token.",
		}, lockLabels),
		lockWaitDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "lock_wait_duration_seconds",
			Help:    "How long callers waited for another holder's fetch.",
			Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 20},
		}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "leader",
			Help: "1 while this replica leads (runs the refresh scheduler), else 0.",
		}),
		leaderTransitions: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "leader_transitions_total",
			Help: "Times this replica gained or lost the lead.",
		}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "http_requests_total",
			Help: "HTTP API requests by route pattern and status code.",
		}, []string{"route", "code"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "http_request_duration_seconds",
			Help:    "HTTP API request duration by route pattern.",
			Buckets: []float64{.0005, .001, .005, .01, .05, .1, .5, 1, 5, 15},
		}, []string{"route"}),
		schedulerRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "scheduler_refreshes_total",
			Help: "Refresh calls made by the scheduler, by outcome class.",
		}, []string{"class"}),
		killedOutside: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "tokens_killed_outside_total",
			Help: "Current tokens that WeChat refused before their usable end: killed by a fetch outside the fleet (is the AppSecret used elsewhere?).",
		}, []string{"app"}),
	}
	m.apps.init(o.perApp, o.worst)
	m.cache.init()
	for _, c := range []prometheus.Collector{
		m.fetches, m.fetchDuration, m.lockWaits, m.lockWaitDuration, m.leader,
		m.leaderTransitions, m.httpRequests, m.httpDuration, m.schedulerRuns, m.killedOutside, &m.apps, &m.cache,
	} {
		if err := reg.Register(c); err != nil {
			return nil, errors.New("metrics: register: " + err.Error())
		}
	}
	return m, nil
}

// SetAppSource sets the func read at every scrape for the per-app gauges.
// It is separate from New because the source usually needs the cache, and
// the cache needs Hooks from Metrics first. f must be safe for concurrent
// use and should bound its own I/O: a scrape waits for it.
func (m *Metrics) SetAppSource(f func() []AppGauge) {
	if m == nil {
		return
	}
	m.apps.source.Store(&f)
}

// InitApps starts the per-app killed-outside counter of each configured app
// at 0, so that increase() and rate() see an app's first kill (a series
// that appears at 1 has no increase). Apps not listed get their series on
// their first kill. Without per-app series (WithPerApp(false)) it does
// nothing: an app's series appears at its first kill, which must never
// happen, so alert on the series being above 0.
func (m *Metrics) InitApps(apps []string) {
	if m == nil || !m.perApp {
		return
	}
	for _, app := range apps {
		m.killedOutside.WithLabelValues(app)
	}
}

// SetCacheStats sets the func read at every scrape for the cache's own
// counters (corrupt records, passive-refresh outcomes, revalidations,
// subscription gaps): normally the process's (*tokencache.Cache).Stats,
// which only loads atomics. Like SetAppSource it is separate from New
// because the cache needs Hooks first.
func (m *Metrics) SetCacheStats(f func() tokencache.Stats) {
	if m == nil {
		return
	}
	m.cache.source.Store(&f)
}

// Hooks returns tokencache hooks that feed ObserveFetch, ObserveLockWait and
// ObserveKilledOutside.
func (m *Metrics) Hooks() tokencache.Hooks {
	return tokencache.Hooks{OnFetch: m.ObserveFetch, OnLockWait: m.ObserveLockWait, OnKilledOutside: m.ObserveKilledOutside}
}

// ObserveKilledOutside counts one current token found dead before its
// usable end (tokencache Hooks.OnKilledOutside).
func (m *Metrics) ObserveKilledOutside(appID string) {
	if m == nil {
		return
	}
	m.killedOutside.WithLabelValues(appID).Inc()
}

// ObserveFetch counts one upstream fetch attempt (tokencache Hooks.OnFetch).
func (m *Metrics) ObserveFetch(ev tokencache.FetchEvent) {
	if m == nil {
		return
	}
	result := ev.Result
	if !fetchResults[result] {
		result = "other"
	}
	if m.perApp {
		m.fetches.WithLabelValues(ev.AppID, result).Inc()
	} else {
		m.fetches.WithLabelValues(result).Inc()
	}
	m.fetchDuration.WithLabelValues(result).Observe(ev.Duration.Seconds())
}

// ObserveLockWait records a wait for another holder's fetch (tokencache
// Hooks.OnLockWait).
func (m *Metrics) ObserveLockWait(appID string, waited time.Duration) {
	if m == nil {
		return
	}
	if m.perApp {
		m.lockWaits.WithLabelValues(appID).Inc()
	} else {
		m.lockWaits.WithLabelValues().Inc()
	}
	m.lockWaitDuration.Observe(waited.Seconds())
}

// SetLeader records whether this replica leads. Wire it to the elector's
// own flag (lock.LeaderCallbacks.OnIsLeaderChange, called synchronously as
// IsLeader changes), not to OnStartedLeading and OnStoppedLeading: those
// run around the leading work, so the gauge would still say 1 while the
// replica already knows it lost the lead. A call that does not change the
// state is not a transition.
func (m *Metrics) SetLeader(leading bool) {
	if m == nil {
		return
	}
	m.leaderMu.Lock()
	defer m.leaderMu.Unlock()
	if m.isLeader.Swap(leading) != leading {
		m.leaderTransitions.Inc()
	}
	if leading {
		m.leader.Set(1)
	} else {
		m.leader.Set(0)
	}
}

// ObserveRefresh counts one scheduler Refresh call by its outcome class
// (scheduler.Class). Classes are a small fixed set, so no app label.
func (m *Metrics) ObserveRefresh(class string) {
	if m == nil {
		return
	}
	m.schedulerRuns.WithLabelValues(class).Inc()
}

// ObserveHTTP records one HTTP request. route must be a route pattern (a
// bounded set), never a raw path.
func (m *Metrics) ObserveHTTP(route string, code int, took time.Duration) {
	if m == nil {
		return
	}
	m.httpRequests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	m.httpDuration.WithLabelValues(route).Observe(took.Seconds())
}

// appCollector reports the per-app gauges from the source at scrape time.
type appCollector struct {
	source    atomic.Pointer[func() []AppGauge]
	perApp    bool
	worst     int
	usable    *prometheus.Desc
	age       *prometheus.Desc
	fetches   *prometheus.Desc
	reporting *prometheus.Desc
	unknown   *prometheus.Desc
	usableAll *prometheus.Desc
	ageAll    *prometheus.Desc
}

// Buckets of the aggregate histograms, in seconds: WeChat's tokens live
// 7200 s; the low buckets are where alerts look.
var (
	usableBuckets = []float64{0, 60, 120, 300, 600, 1200, 1800, 3600, 5400, 7200}
	ageBuckets    = []float64{60, 300, 600, 1200, 1800, 3600, 5400, 7200}
)

func (c *appCollector) init(perApp bool, worst int) {
	c.perApp, c.worst = perApp, worst
	which := "the app's"
	if !perApp {
		which = "the app's (only the apps with the least usable life left are reported)"
	}
	c.usable = prometheus.NewDesc(Namespace+"_token_usable_seconds",
		"Usable life left of "+which+" current token (0 when it has none).", []string{"app"}, nil)
	c.age = prometheus.NewDesc(Namespace+"_token_age_seconds",
		"Time since "+which+" current token was fetched.", []string{"app"}, nil)
	c.fetches = prometheus.NewDesc(Namespace+"_quota_used_today",
		"Upstream fetches by the whole fleet for the app in the current Beijing day.", []string{"app"}, nil)
	c.reporting = prometheus.NewDesc(Namespace+"_apps",
		"Number of apps reported by the per-app source at this scrape.", nil, nil)
	c.unknown = prometheus.NewDesc(Namespace+"_apps_unknown",
		"Apps of which this process knows no token (it never read or was told of one): in no token series.", nil, nil)
	c.usableAll = prometheus.NewDesc(Namespace+"_tokens_usable_seconds",
		"Distribution over the known apps of their current token's usable life left (0 without a token).", nil, nil)
	c.ageAll = prometheus.NewDesc(Namespace+"_tokens_age_seconds",
		"Distribution over the apps with a token of the time since it was fetched.", nil, nil)
}

func (c *appCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.usable, c.age, c.fetches, c.reporting, c.unknown, c.usableAll, c.ageAll} {
		ch <- d
	}
}

func (c *appCollector) Collect(ch chan<- prometheus.Metric) {
	f := c.source.Load()
	if f == nil {
		return
	}
	apps := (*f)()
	ch <- prometheus.MustNewConstMetric(c.reporting, prometheus.GaugeValue, float64(len(apps)))
	unknown := 0
	for i := range apps {
		if apps[i].Unknown {
			unknown++
		}
	}
	ch <- prometheus.MustNewConstMetric(c.unknown, prometheus.GaugeValue, float64(unknown))
	if c.perApp {
		for i := range apps {
			c.collectApp(ch, &apps[i])
		}
		return
	}
	usable, age := newConstHistogram(usableBuckets), newConstHistogram(ageBuckets)
	worst := make([]*AppGauge, 0, c.worst+1)
	for i := range apps {
		a := &apps[i]
		if a.Unknown {
			continue
		}
		usable.observe(usableSeconds(a))
		if a.HasToken {
			age.observe(max(a.Age.Seconds(), 0))
		}
		worst = keepWorst(worst, a, c.worst)
	}
	ch <- usable.metric(c.usableAll)
	ch <- age.metric(c.ageAll)
	for _, a := range worst {
		c.collectApp(ch, a)
	}
}

// collectApp sends one app's own series.
func (c *appCollector) collectApp(ch chan<- prometheus.Metric, a *AppGauge) {
	if a.Unknown {
		return
	}
	if a.HasToken {
		ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, max(a.Age.Seconds(), 0), a.AppID)
	}
	ch <- prometheus.MustNewConstMetric(c.usable, prometheus.GaugeValue, usableSeconds(a), a.AppID)
	if a.FetchesToday >= 0 {
		ch <- prometheus.MustNewConstMetric(c.fetches, prometheus.GaugeValue, float64(a.FetchesToday), a.AppID)
	}
}

func usableSeconds(a *AppGauge) float64 {
	if !a.HasToken {
		return 0
	}
	return max(a.UsableFor.Seconds(), 0)
}

// keepWorst inserts a into worst, kept sorted by usable life (least
// first, then appid) and at most n long.
func keepWorst(worst []*AppGauge, a *AppGauge, n int) []*AppGauge {
	if n == 0 {
		return worst
	}
	less := func(x, y *AppGauge) bool {
		ux, uy := usableSeconds(x), usableSeconds(y)
		return ux < uy || ux == uy && x.AppID < y.AppID
	}
	if len(worst) == n && !less(a, worst[n-1]) {
		return worst
	}
	i := len(worst)
	for i > 0 && less(a, worst[i-1]) {
		i--
	}
	if len(worst) < n {
		worst = append(worst, nil)
	}
	copy(worst[i+1:], worst[i:len(worst)-1])
	worst[i] = a
	return worst
}

// constHistogram counts observations into cumulative buckets for a const
// histogram built at scrape time.
type constHistogram struct {
	bounds []float64
	counts []uint64 // per bucket, not cumulative
	n      uint64
	sum    float64
}

func newConstHistogram(bounds []float64) *constHistogram {
	return &constHistogram{bounds: bounds, counts: make([]uint64, len(bounds))}
}

func (h *constHistogram) observe(v float64) {
	h.n++
	h.sum += v
	for i, b := range h.bounds {
		if v <= b {
			h.counts[i]++
			return
		}
	}
}

func (h *constHistogram) metric(d *prometheus.Desc) prometheus.Metric {
	cum := make(map[float64]uint64, len(h.bounds))
	var c uint64
	for i, b := range h.bounds {
		c += h.counts[i]
		cum[b] = c
	}
	return prometheus.MustNewConstHistogram(d, h.n, h.sum, cum)
}

// cacheCollector reports the cache's own counters from its Stats at scrape
// time: none of them is updated on the token hit path, and none is copied.
type cacheCollector struct {
	source        atomic.Pointer[func() tokencache.Stats]
	corrupt       *prometheus.Desc
	revalidations *prometheus.Desc
	gaps          *prometheus.Desc
	invalidations *prometheus.Desc
}

func (c *cacheCollector) init() {
	c.corrupt = prometheus.NewDesc(Namespace+"_cache_corrupt_records_total",
		"Corrupt records this process read from Redis (never served; a fetch replaces them).", nil, nil)
	c.revalidations = prometheus.NewDesc(Namespace+"_cache_revalidations_total",
		"Background re-reads of a near-cached token by this process: ok (Redis confirmed it), error (Redis did not answer; the copy kept serving).",
		[]string{"result"}, nil)
	c.gaps = prometheus.NewDesc(Namespace+"_cache_subscription_gaps_total",
		"(Re)subscriptions to the change channel: announcements may have been missed, so every near copy was re-confirmed.", nil, nil)
	c.invalidations = prometheus.NewDesc(Namespace+"_invalidations_total",
		`Passive-refresh reports handled by this process, by outcome: ignored (not the current token; nothing spent), refuted (WeChat still accepts it), believed (went on to fetch or to wait for a fetch; those the fleet-wide rate refused are fetches_total{result="limited"}).`,
		[]string{"outcome"}, nil)
}

func (c *cacheCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.corrupt
	ch <- c.revalidations
	ch <- c.gaps
	ch <- c.invalidations
}

func (c *cacheCollector) Collect(ch chan<- prometheus.Metric) {
	f := c.source.Load()
	if f == nil {
		return
	}
	s := (*f)()
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(c.corrupt, s.CorruptRecords)
	counter(c.revalidations, s.Revalidations, "ok")
	counter(c.revalidations, s.RevalidationErrors, "error")
	counter(c.gaps, s.SubscriptionGaps)
	counter(c.invalidations, s.InvalidationsIgnored, "ignored")
	counter(c.invalidations, s.InvalidationsRefuted, "refuted")
	counter(c.invalidations, s.Invalidations, "believed")
}
