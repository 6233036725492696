package refresher

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"github.com/tokenkeeper/tokenkeeper/internal/backend"
	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/internal/httpapi"
	"github.com/tokenkeeper/tokenkeeper/internal/metrics"
	"github.com/tokenkeeper/tokenkeeper/internal/scheduler"
	"github.com/tokenkeeper/tokenkeeper/internal/status"
	"github.com/tokenkeeper/tokenkeeper/internal/tlsfiles"
	"github.com/tokenkeeper/tokenkeeper/pkg/lock"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
)

// Shutdown bounds.
const (
	httpShutdownTimeout = 5 * time.Second
	// electorStopTimeout bounds the wait for the elector to release the
	// lease and for the scheduler's in-flight refreshes to end.
	electorStopTimeout = 10 * time.Second
)

// Replica is one refresher replica, built by New and run once by Run.
type Replica struct {
	cfg         *config.Config
	log         *slog.Logger
	onListening func(addr string)

	client  redis.UniversalClient
	locks   *backend.Locks // the lock masters (redis.lock_addrs), if any
	cache   *tokencache.Cache
	tickets *tokencache.Tickets // nil when no app keeps tickets
	writer  *status.Writer
	elector *lock.Elector
	handler http.Handler
	// eviction is the maxmemory-policy check Run makes at start; nil
	// until it answered.
	eviction atomic.Pointer[backend.EvictionCheck]
	reg      *prometheus.Registry

	// What a reload changes (reload.go).
	loader         func() (*config.Config, error)
	reloadSignal   <-chan os.Signal
	onReload       func(error)
	reloadSteps    []func(next *config.Config) error // AddReloadStep
	onOpsListening func(addr string)
	reloadMu       sync.Mutex // one reload at a time; guards cfg's replacement
	src            *liveSource
	api            *httpapi.Handler
	sched          *scheduler.Scheduler
	m              *metrics.Metrics
	appIDs         atomic.Pointer[[]string]
	cert           *tlsfiles.Certificate // nil without TLS
	reloadOK       prometheus.Gauge      // as Prometheus's own: 1 if the last reload applied
	reloadAt       prometheus.Gauge      // when the configuration last loaded
	ops            http.Handler          // the metrics.addr listener's; nil without one
}

// Option configures a Replica.
type Option func(*Replica)

// WithOnOpsListening is WithOnListening for the operations listener
// (metrics.addr).
func WithOnOpsListening(f func(addr string)) Option { return func(r *Replica) { r.onOpsListening = f } }

// WithOnListening has Run call f with the bound address once the HTTP API
// accepts connections (demo mode prints its instructions then; an
// http.addr with port 0 learns its port).
func WithOnListening(f func(addr string)) Option { return func(r *Replica) { r.onListening = f } }

// New wires a replica from cfg, logging to log. It sends nothing to Redis
// or WeChat yet. A configuration the libraries refuse is a
// backend.ErrConfig. Run must be called: it releases what New opened.
func New(cfg *config.Config, log *slog.Logger, opts ...Option) (_ *Replica, err error) {
	// The elector names the identity in its own lines.
	electorLog := log
	r := &Replica{cfg: cfg, log: log.With("identity", cfg.Identity)}
	for _, o := range opts {
		o(r)
	}
	r.client = backend.NewClient(cfg)
	r.locks = backend.NewLocks(cfg)
	defer func() {
		if err != nil {
			r.close()
		}
	}()

	reg := prometheus.NewRegistry()
	r.reg = reg
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m, err := metrics.New(reg, metrics.WithPerApp(perAppSeries(cfg)))
	if err != nil {
		return nil, err
	}
	r.m = m
	// Named as Prometheus names its own, so the same alert fits.
	r.reloadOK = prometheus.NewGauge(prometheus.GaugeOpts{Name: "tokenkeeper_config_last_reload_successful",
		Help: "1 if the last configuration reload (SIGHUP, POST /admin/reload) applied, 0 if it was refused and the previous configuration stays."})
	r.reloadAt = prometheus.NewGauge(prometheus.GaugeOpts{Name: "tokenkeeper_config_last_reload_success_timestamp_seconds",
		Help: "When the configuration was last loaded successfully (start or reload), Unix seconds."})
	r.reloadOK.Set(1)
	r.reloadAt.SetToCurrentTime()
	if err := reg.Register(r.reloadOK); err != nil {
		return nil, err
	}
	if err := reg.Register(r.reloadAt); err != nil {
		return nil, err
	}
	ids := cfg.AppIDs()
	r.appIDs.Store(&ids)
	first, err := newSource(cfg)
	if err != nil {
		return nil, err
	}
	r.src = &liveSource{}
	r.src.cur.Store(first)
	if t := cfg.HTTP.TLS; t.Enabled() {
		if r.cert, err = tlsfiles.Load(t.CertFile, t.KeyFile); err != nil {
			return nil, backend.Configf(err)
		}
	}

	r.writer = status.NewWriter(r.client, cfg, r.log)
	hooks := m.Hooks()
	hooks.OnFetch = func(ev tokencache.FetchEvent) {
		m.ObserveFetch(ev)
		r.writer.Record(ev)
	}
	// The scheduler needs the cache, and the cache its hooks: the
	// scheduler is set once built. A record changed by any process (a cap
	// after another replica's failed passive refresh) re-plans its app;
	// Changed is a no-op while this replica does not lead.
	var schedPtr atomic.Pointer[scheduler.Scheduler]
	hooks.OnChange = func(app string) {
		if s := schedPtr.Load(); s != nil {
			s.Changed(app)
		}
	}
	// The cache's source is replaced by a reload; the rest is
	// backend.NewCache's. The leader's fetches spread the fleet's
	// refreshes evenly over time (tokencache.WithRefreshSpread).
	if r.cache, err = tokencache.New(r.client, r.src, append(append(cfg.CacheOptions(), r.locks.CacheOptions()...), tokencache.WithLogger(r.log), tokencache.WithHooks(hooks), tokencache.WithRefreshSpread())...); err != nil {
		return nil, backend.Configf(err)
	}
	m.SetAppSource(metrics.KnownSource(r.cache.Admin(), func() []string { return *r.appIDs.Load() }, nil))
	m.SetCacheStats(r.cache.Admin().Stats)
	m.InitApps(cfg.AppIDs())

	sched, err := scheduler.New(scheduler.Config{
		Apps:          cfg.AppIDs(),
		Refresher:     r.cache.Admin(),
		Logger:        r.log,
		MaxConcurrent: cfg.Scheduler.MaxConcurrent,
		OnResult:      func(res scheduler.Result) { m.ObserveRefresh(res.Class) },
		// The fleet-wide hold's length: retried when it ends.
		ConfigRetry: cfg.Cache.ConfigHold,
	})
	if err != nil {
		return nil, err
	}
	schedPtr.Store(sched)
	ticketScheds, err := r.wireTickets(reg)
	if err != nil {
		return nil, err
	}
	r.sched = sched

	r.elector, err = lock.NewElector(r.locks.Elector(cfg.ElectorConfig(r.client, lock.LeaderCallbacks{
		// The gauge follows the elector's own flag, set synchronously:
		// 0 before the scheduler's ctx is cancelled and before the lease
		// is released, so it never says 1 once this replica knows it no
		// longer leads (nor goes back to 1 after a short term ended).
		OnIsLeaderChange: m.SetLeader,
		OnStartedLeading: func(leading context.Context) {
			r.log.Info("refresher: started leading; running the refresh scheduler")
			done := runTicketSchedulers(leading, ticketScheds, r.log)
			if err := sched.Run(leading); err != nil && !errors.Is(err, context.Canceled) {
				r.log.Error("refresher: scheduler stopped", "err", err)
			}
			<-done
		},
		OnStoppedLeading: func() {
			r.log.Info("refresher: stopped leading; serving tokens only")
		},
		OnNewLeader: func(id string) { r.log.Info("refresher: leader is now", "leader", id) },
	}, electorLog)))
	if err != nil {
		return nil, backend.Configf(err)
	}

	// With a listener of their own (metrics.addr), /metrics leaves the
	// API's listener; /healthz and /readyz stay on both.
	var apiGatherer prometheus.Gatherer = reg
	if cfg.Metrics.Addr != "" {
		apiGatherer = nil
		if r.ops, err = httpapi.NewOps(httpapi.OpsConfig{Ready: r.ready, ReadyWarnings: r.readyWarnings, Gatherer: reg, Metrics: m, Logger: r.log}); err != nil {
			return nil, backend.Configf(err)
		}
	}
	h, err := httpapi.New(httpapi.Config{
		Tokens:         r.cache,
		Apps:           cfg.AppIDs(),
		APIKeys:        apiKeys(cfg),
		Ready:          r.ready,
		ReadyWarnings:  r.readyWarnings,
		Gatherer:       apiGatherer,
		Metrics:        m,
		Logger:         r.log,
		InvalidateRate: rate.Limit(cfg.HTTP.InvalidateRate),
		Tickets:        r.ticketsAPI(),
		AppTickets:     cfg.AppTickets(),
		Reload:         r.Reload,
	})
	if err != nil {
		return nil, backend.Configf(err)
	}
	r.handler = h
	r.api = h.(*httpapi.Handler)
	return r, nil
}

// Cache is the replica's token cache, for another front end in the same
// process (the WeChat-compatible gateway).
func (r *Replica) Cache() *tokencache.Cache { return r.cache }

// Redis is the replica's Redis client (closed by Run on its way out).
func (r *Replica) Redis() redis.UniversalClient { return r.client }

// Registry is the registry /metrics serves: another front end registers
// its collectors there.
func (r *Replica) Registry() prometheus.Registerer { return r.reg }

// Close releases what New opened, for a replica that will not Run (Run
// releases it itself).
func (r *Replica) Close() { r.close() }

// ready is /readyz: Redis answers and some replica leads.
func (r *Replica) ready(ctx context.Context) error {
	if err := r.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis unreachable: %w", err)
	}
	leader, err := r.elector.Leader(ctx)
	if err != nil {
		return err
	}
	if leader == "" {
		return errors.New("no leader elected yet")
	}
	return nil
}

// readyWarnings are /readyz's warnings: the eviction check's.
func (r *Replica) readyWarnings() []string {
	if ev := r.eviction.Load(); ev != nil && !ev.Safe() {
		return []string{ev.Warning()}
	}
	return nil
}

// checkEviction checks Redis's maxmemory-policy once, logging loudly
// unless it is noeviction (see backend.SafeEvictionPolicy for why).
func (r *Replica) checkEviction(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ev := backend.CheckEviction(ctx, r.client)
	r.eviction.Store(&ev)
	if !ev.Safe() {
		r.log.Warn("refresher: "+ev.Warning(), "policies", ev.Policies)
	}
}

// close releases what New opened, in reverse order.
func (r *Replica) close() {
	if r.tickets != nil {
		r.tickets.Close()
	}
	if r.cache != nil {
		r.cache.Close()
	}
	if r.writer != nil {
		r.writer.Close()
	}
	r.client.Close()
	r.locks.Close()
}

// Run serves HTTP and takes part in the election until ctx is done (nil
// error) or the HTTP server fails. On the way out it releases the lease
// (if held) while the HTTP server drains, each bounded, and then closes
// the cache, the last-fetch writer and the Redis client.
func (r *Replica) Run(ctx context.Context) error {
	defer r.close()
	cfg, log := r.cfg, r.log

	ln, err := net.Listen("tcp", cfg.HTTP.Addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("http.addr %s is already in use by another process: stop it, or choose another address (--http-addr 127.0.0.1:8081 or TOKENKEEPER_HTTP_ADDR)", cfg.HTTP.Addr)
		}
		return fmt.Errorf("listen on http.addr %s: %w", cfg.HTTP.Addr, err)
	}
	if r.cert != nil {
		ln = tls.NewListener(ln, r.cert.ServerConfig())
	}
	srv := &http.Server{
		Handler:           r.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		// A token request may wait for a fetch (fetch timeout + lock wait).
		WriteTimeout:   cfg.Cache.LockTTL + cfg.Cache.FetchTimeout + 10*time.Second,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 16 << 10,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 2)
	go func() { served <- srv.Serve(ln) }()
	log.Info("refresher: HTTP API listening", "addr", ln.Addr().String(), "tls", r.cert != nil, "apps", len(cfg.Apps), "api_keys", len(cfg.HTTP.APIKeys))
	if r.ops != nil {
		opsLn, err := net.Listen("tcp", cfg.Metrics.Addr)
		if err != nil {
			_ = srv.Close()
			return fmt.Errorf("listen on metrics.addr %s: %w", cfg.Metrics.Addr, err)
		}
		opsSrv := &http.Server{Handler: r.ops, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
			WriteTimeout: 30 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
		go func() { served <- opsSrv.Serve(opsLn) }()
		defer opsSrv.Close()
		log.Info("refresher: operations listening (/metrics, /healthz, /readyz)", "addr", opsLn.Addr().String())
		if r.onOpsListening != nil {
			r.onOpsListening(opsLn.Addr().String())
		}
	}
	if r.reloadSignal != nil {
		reloadCtx, stopReloads := context.WithCancel(ctx)
		defer stopReloads()
		go r.reloadOn(reloadCtx, r.reloadSignal)
	}
	if r.onListening != nil {
		r.onListening(ln.Addr().String())
	}

	go r.checkEviction(ctx)

	electorCtx, stopElector := context.WithCancel(context.Background())
	defer stopElector()
	elected := make(chan error, 1)
	go func() { elected <- r.elector.Run(electorCtx) }()

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("refresher: shutting down", "cause", context.Cause(ctx))
	case err := <-served:
		runErr = fmt.Errorf("HTTP server: %w", err)
	}

	// Release the lease first, so a standby takes over at once, while the
	// HTTP server drains in parallel.
	stopElector()
	httpDone := make(chan struct{})
	go func() {
		defer close(httpDone)
		sctx, cancel := context.WithTimeout(context.Background(), httpShutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			log.Warn("refresher: HTTP shutdown cut short", "err", err)
		}
	}()
	select {
	case err := <-elected:
		if err != nil {
			log.Warn("refresher: lease not released; it expires on its own", "err", err, "within", cfg.Lease.Duration)
		} else {
			log.Info("refresher: left the election (lease released if held)")
		}
	case <-time.After(electorStopTimeout):
		log.Warn("refresher: elector did not stop in time; the lease expires on its own", "within", cfg.Lease.Duration)
	}
	<-httpDone
	return runErr
}

func apiKeys(cfg *config.Config) []httpapi.APIKey {
	keys := make([]httpapi.APIKey, len(cfg.HTTP.APIKeys))
	for i, k := range cfg.HTTP.APIKeys {
		keys[i] = httpapi.APIKey{Name: k.Name, Key: k.Key, Apps: k.Apps, PageHosts: k.PageHosts}
	}
	return keys
}

// perAppSeries is whether /metrics has series per app (metrics.per_app).
func perAppSeries(cfg *config.Config) bool {
	switch cfg.Metrics.PerApp {
	case "on":
		return true
	case "off":
		return false
	}
	return metrics.PerAppFor(len(cfg.Apps))
}
