package refresher

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/backend"
	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/internal/scheduler"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// liveSource is the cache's Source, replaced whole by a reload: a fetch
// under way finishes with the secret it started with, the next one uses
// the new.
type liveSource struct{ cur atomic.Pointer[wechat.Source] }

func (s *liveSource) Fetch(ctx context.Context, appID string) (wechat.Token, error) {
	return s.cur.Load().Fetch(ctx, appID)
}
func (s *liveSource) Mode(appID string) wechat.Mode { return s.cur.Load().Mode(appID) }
func (s *liveSource) Verify(ctx context.Context, appID, token string) error {
	return s.cur.Load().Verify(ctx, appID, token)
}

func newSource(cfg *config.Config) (*wechat.Source, error) {
	src, err := wechat.NewSource(wechat.NewClient(cfg.WeChatClientOptions()...), cfg.WeChatApps()...)
	if err != nil {
		return nil, backend.Configf(err)
	}
	return src, nil
}

// WithReloader gives the replica where its configuration comes from, for
// Reload: the same file, environment, flags and secret files it started
// with, read again (config.Load).
func WithReloader(load func() (*config.Config, error)) Option {
	return func(r *Replica) { r.loader = load }
}

// ErrNoReloader: the replica was built without WithReloader.
var ErrNoReloader = errors.New("reload: this replica has no configuration source to re-read")

// Reload re-reads the configuration and applies it while serving: added
// apps are fetched and scheduled at once, removed ones are no longer
// refreshed or served (their Redis keys are left alone: another deployment
// may share them), a changed secret is used from the next fetch on and
// lifts the app's hold, and API keys and the TLS certificate are replaced.
// A configuration that fails validation, or that changes a setting only a
// restart can apply, is refused with the reason and changes nothing.
func (r *Replica) Reload(ctx context.Context) error {
	r.reloadMu.Lock()
	defer r.reloadMu.Unlock()
	err := r.reload()
	if err != nil {
		r.log.Error("refresher: reload refused; the running configuration stays", "err", err)
		r.reloadOK.Set(0)
	} else {
		r.reloadOK.Set(1)
		r.reloadAt.SetToCurrentTime()
	}
	if r.onReload != nil {
		r.onReload(err)
	}
	return err
}

func (r *Replica) reload() error {
	if r.loader == nil {
		return ErrNoReloader
	}
	old := r.cfg
	next, err := r.loader()
	if err != nil {
		return err
	}
	if fields := restartOnly(old, next); len(fields) > 0 {
		return fmt.Errorf("reload: %s changed, which only a restart applies; restart the replica (or undo the change)", strings.Join(fields, ", "))
	}
	src, err := newSource(next)
	if err != nil {
		return err
	}
	if r.cert != nil {
		if err := r.cert.Reload(); err != nil {
			return err
		}
	}
	// The steps of the parts built around the replica (the gateway's
	// credentials) and the handler check what they take as their
	// constructors did; the handler is the last step that can refuse, so
	// everything after it applies. config.Load checked all of it already:
	// a refusal here is not expected.
	for _, step := range r.reloadSteps {
		if err := step(next); err != nil {
			return backend.Configf(err)
		}
	}
	if err := r.api.Update(next.AppIDs(), apiKeys(next)); err != nil {
		return backend.Configf(err)
	}
	r.src.cur.Store(src)
	ids := next.AppIDs()
	r.appIDs.Store(&ids)
	added, removed, err := r.sched.SetApps(ids)
	if err != nil {
		// Validated by config.Load; not expected.
		return err
	}
	r.m.InitApps(added)

	oldSecrets := map[string]wechat.Secret{}
	for _, a := range old.Apps {
		oldSecrets[a.ID] = a.Secret
	}
	var retry []string
	for _, a := range next.Apps {
		if s, ok := oldSecrets[a.ID]; ok && s != a.Secret {
			r.liftHold(a.ID)
			retry = append(retry, a.ID)
			r.log.Info("refresher: reload: secret changed; used from the next fetch", "app", a.ID)
		}
	}
	for _, st := range r.sched.Snapshot() {
		if st.LastClass == scheduler.ClassConfig {
			// The operator may have fixed what WeChat refused (an IP
			// whitelist) without a change we can see.
			r.liftHold(st.AppID)
			retry = append(retry, st.AppID)
		}
	}
	r.sched.RetryNow(retry...)
	for _, app := range added {
		r.log.Info("refresher: reload: app added; fetched and scheduled at once", "app", app)
	}
	for _, app := range removed {
		r.log.Warn("refresher: reload: app removed; no longer refreshed or served; its Redis keys are left alone (another deployment may share them)", "app", app)
	}
	r.cfg = next
	for _, w := range next.Warnings {
		r.log.Warn("refresher: configuration: " + w)
	}
	r.log.Info("refresher: configuration reloaded", "apps", len(next.Apps), "api_keys", len(next.HTTP.APIKeys), "added", len(added), "removed", len(removed))
	return nil
}

// restartOnly names the settings that differ between a and b and that the
// running replica cannot change: how it reaches Redis, who it is in the
// election, the cache's rules, its listeners, an app's mode (the cache
// keeps it per app), the invalidation rate and the logger.
func restartOnly(a, b *config.Config) []string {
	var out []string
	diff := func(name string, x, y any) {
		if !reflect.DeepEqual(x, y) {
			out = append(out, name)
		}
	}
	diff("redis", a.Redis, b.Redis)
	diff("identity", a.Identity, b.Identity)
	diff("lease", a.Lease, b.Lease)
	diff("cache", a.Cache, b.Cache)
	diff("http.addr", a.HTTP.Addr, b.HTTP.Addr)
	diff("http.invalidate_rate", a.HTTP.InvalidateRate, b.HTTP.InvalidateRate)
	diff("http.tls", a.HTTP.TLS, b.HTTP.TLS)
	diff("metrics.addr", a.Metrics.Addr, b.Metrics.Addr)
	diff("log", a.Log, b.Log)
	diff("metrics.per_app", a.Metrics.PerApp, b.Metrics.PerApp)
	diff("scheduler", a.Scheduler, b.Scheduler)
	// The gateway's credentials are a reload step (AddReloadStep); the
	// rest of it is built at start.
	ga, gb := a.Gateway, b.Gateway
	ga.Credentials, gb.Credentials = nil, nil
	diff("gateway", ga, gb)
	old := map[string]config.App{}
	for _, app := range a.Apps {
		old[app.ID] = app
	}
	for _, app := range b.Apps {
		was, ok := old[app.ID]
		if ok && was.Mode != app.Mode {
			out = append(out, "apps ("+app.ID+").mode")
		}
		// The ticket schedulers and the HTTP API's ticket routes are built
		// at start.
		if !slices.Equal(was.Tickets, app.Tickets) {
			out = append(out, "apps ("+app.ID+").tickets")
		}
	}
	// The gateway holds the apps and secrets it started with (it
	// substitutes the secret on /sns calls): with it on, the app list and
	// its secrets change only with a restart, rather than silently not at
	// all.
	if a.Gateway.Addr != "" && !sameAppsAndSecrets(a.Apps, b.Apps) {
		out = append(out, "apps (with gateway.addr set: the gateway's apps and secrets)")
	}
	return out
}

func sameAppsAndSecrets(a, b []config.App) bool {
	return slices.EqualFunc(a, b, func(x, y config.App) bool {
		return x.ID == y.ID && x.Secret.Reveal() == y.Secret.Reveal()
	})
}

// AddReloadStep has every Reload call step with the new configuration,
// after it passed restartOnly and before it is applied: a part built
// around the replica (the gateway) takes what it can change live. A step
// that returns an error refuses the reload; the steps run in the order
// added, so a step should refuse before it changes anything.
func (r *Replica) AddReloadStep(step func(next *config.Config) error) {
	r.reloadMu.Lock()
	defer r.reloadMu.Unlock()
	r.reloadSteps = append(r.reloadSteps, step)
}

// WithOnReload has Reload call f with its outcome (nil: applied).
func WithOnReload(f func(err error)) Option { return func(r *Replica) { r.onReload = f } }

// WithReloadSignal has Run reload (Reload) on every value of c: the CLI
// sends SIGHUP there.
func WithReloadSignal(c <-chan os.Signal) Option { return func(r *Replica) { r.reloadSignal = c } }

// reloadOn reloads on every value of signals until ctx is done.
func (r *Replica) reloadOn(ctx context.Context, signals <-chan os.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-signals:
			r.log.Info("refresher: SIGHUP: reloading the configuration")
			_ = r.Reload(ctx) // logged by Reload
		}
	}
}

func (r *Replica) liftHold(app string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := r.cache.LiftHold(ctx, app); err != nil {
		r.log.Warn("refresher: reload: the fleet-wide hold stays until it expires", "app", app, "err", err)
	}
}
