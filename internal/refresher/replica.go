package refresher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
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
	cache   *tokencache.Cache
	writer  *status.Writer
	elector *lock.Elector
	handler http.Handler
}

// Option configures a Replica.
type Option func(*Replica)

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
	defer func() {
		if err != nil {
			r.close()
		}
	}()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m, err := metrics.New(reg, metrics.WithPerApp(perAppSeries(cfg)))
	if err != nil {
		return nil, err
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
	// The leader's fetches spread the fleet's refreshes evenly over time
	// (tokencache.WithRefreshSpread).
	if r.cache, err = backend.NewCache(cfg, r.client, tokencache.WithLogger(r.log), tokencache.WithHooks(hooks), tokencache.WithRefreshSpread()); err != nil {
		return nil, err
	}
	m.SetAppSource(metrics.KnownSource(r.cache, cfg.AppIDs(), nil))
	m.SetCacheStats(r.cache.Stats)
	m.InitApps(cfg.AppIDs())

	sched, err := scheduler.New(scheduler.Config{
		Apps:          cfg.AppIDs(),
		Refresher:     r.cache,
		Logger:        r.log,
		MaxConcurrent: cfg.Scheduler.MaxConcurrent,
		OnResult:      func(res scheduler.Result) { m.ObserveRefresh(res.Class) },
	})
	if err != nil {
		return nil, err
	}
	schedPtr.Store(sched)

	r.elector, err = lock.NewElector(cfg.ElectorConfig(r.client, lock.LeaderCallbacks{
		// The gauge follows the elector's own flag, set synchronously:
		// 0 before the scheduler's ctx is cancelled and before the lease
		// is released, so it never says 1 once this replica knows it no
		// longer leads (nor goes back to 1 after a short term ended).
		OnIsLeaderChange: m.SetLeader,
		OnStartedLeading: func(leading context.Context) {
			r.log.Info("refresher: started leading; running the refresh scheduler")
			if err := sched.Run(leading); err != nil && !errors.Is(err, context.Canceled) {
				r.log.Error("refresher: scheduler stopped", "err", err)
			}
		},
		OnStoppedLeading: func() {
			r.log.Info("refresher: stopped leading; serving tokens only")
		},
		OnNewLeader: func(id string) { r.log.Info("refresher: leader is now", "leader", id) },
	}, electorLog))
	if err != nil {
		return nil, backend.Configf(err)
	}

	r.handler, err = httpapi.New(httpapi.Config{
		Tokens:         r.cache,
		Apps:           cfg.AppIDs(),
		APIKeys:        apiKeys(cfg),
		Ready:          r.ready,
		Gatherer:       reg,
		Metrics:        m,
		Logger:         r.log,
		InvalidateRate: rate.Limit(cfg.HTTP.InvalidateRate),
	})
	if err != nil {
		return nil, backend.Configf(err)
	}
	return r, nil
}

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

// close releases what New opened, in reverse order.
func (r *Replica) close() {
	if r.cache != nil {
		r.cache.Close()
	}
	if r.writer != nil {
		r.writer.Close()
	}
	r.client.Close()
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
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("refresher: HTTP API listening", "addr", ln.Addr().String(), "apps", len(cfg.Apps), "api_keys", len(cfg.HTTP.APIKeys))
	if r.onListening != nil {
		r.onListening(ln.Addr().String())
	}

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
		keys[i] = httpapi.APIKey{Name: k.Name, Key: k.Key, Apps: k.Apps}
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
