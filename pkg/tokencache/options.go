package tokencache

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/tokenkeeper/tokenkeeper/pkg/lock"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// Option configures a Cache.
type Option func(*options)

type options struct {
	keyPrefix    string
	refreshAhead time.Duration
	margin       time.Duration
	overlap      time.Duration
	lockTTL      time.Duration
	fetchTimeout time.Duration
	nearMaxAge   time.Duration
	dailyBudget  int
	// passive refreshes: a fleet-wide rate, and the part of the daily
	// budget they may not use
	passiveLimit    int
	passiveWindow   time.Duration
	scheduleReserve int
	backoffBase     time.Duration
	backoffMax      time.Duration
	configHold      time.Duration
	logger          *slog.Logger
	now             func() time.Time
	locker          lock.Locker
	modes           map[string]wechat.Mode
	hooks           Hooks
}

func defaultOptions() options {
	return options{
		keyPrefix:       "tokenkeeper:",
		refreshAhead:    5 * time.Minute,
		margin:          time.Minute,
		overlap:         5 * time.Minute,
		lockTTL:         15 * time.Second,
		fetchTimeout:    10 * time.Second,
		nearMaxAge:      10 * time.Second,
		dailyBudget:     1500,
		passiveLimit:    6,
		passiveWindow:   time.Minute,
		scheduleReserve: 300,
		backoffBase:     time.Second,
		backoffMax:      time.Minute,
		configHold:      5 * time.Minute,
		now:             time.Now,
		modes:           map[string]wechat.Mode{},
	}
}

// WithKeyPrefix sets the prefix of every Redis key and of the events
// channel (default "tokenkeeper:"). It may not contain '{' or '}', which
// would break the per-app hash tag.
func WithKeyPrefix(p string) Option { return func(o *options) { o.keyPrefix = p } }

// WithRefreshAhead sets how long before a token's usable end a refresh
// becomes due (default 5m). It is clamped to half the token's usable life,
// so a short-lived token is not refreshed the moment it arrives.
func WithRefreshAhead(d time.Duration) Option { return func(o *options) { o.refreshAhead = d } }

// WithMargin sets how long before WeChat's own expiry a token stops being
// handed out (default 1m): the key's TTL is expires_in minus the margin.
// It is clamped to a fifth of expires_in, so a short lifetime (a stable
// token can say 300 s) never gives a zero or negative TTL.
func WithMargin(d time.Duration) Option { return func(o *options) { o.margin = d } }

// WithOverlap sets how long WeChat keeps accepting a classic token after a
// newer one was minted (default 5m, WeChat's documented value). Change it
// only for a test upstream with a shorter grace.
func WithOverlap(d time.Duration) Option { return func(o *options) { o.overlap = d } }

// WithLockTTL sets the expiry of the per-app fetch lock and of a fetch's
// intent (default 15s). It must exceed the fetch timeout.
func WithLockTTL(d time.Duration) Option { return func(o *options) { o.lockTTL = d } }

// WithFetchTimeout bounds one upstream fetch (default 10s).
func WithFetchTimeout(d time.Duration) Option { return func(o *options) { o.fetchTimeout = d } }

// WithNearMaxAge sets how long a process trusts its in-memory copy without
// re-reading Redis (default 10s; 0 turns the near cache off). It covers a
// lost change message, so it must stay well under the overlap.
func WithNearMaxAge(d time.Duration) Option { return func(o *options) { o.nearMaxAge = d } }

// WithDailyBudget caps upstream fetches per app per Beijing day, counted in
// Redis across every process (default 1500, under WeChat's 2000; 0 = no cap).
func WithDailyBudget(n int) Option { return func(o *options) { o.dailyBudget = n } }

// WithPassiveRefreshLimit caps fetches caused by Invalidate (tokens
// verified dead) at n per window for each app, counted in Redis across every
// process (default 6 a minute; n = 0: no cap), and keeps the last reserve
// fetches of each day's budget for refreshes ahead of expiry and misses
// (default 300, at most a fifth of the budget), so passive refreshes can
// never starve them.
func WithPassiveRefreshLimit(n int, window time.Duration, reserve int) Option {
	return func(o *options) { o.passiveLimit, o.passiveWindow, o.scheduleReserve = n, window, reserve }
}

// WithBackoff sets the exponential backoff, with jitter, after transient
// upstream failures (default 1s doubling to 1m).
func WithBackoff(base, max time.Duration) Option {
	return func(o *options) { o.backoffBase, o.backoffMax = base, max }
}

// WithConfigErrorHold sets how long fetching stops for an app after a
// configuration error such as a wrong secret (default 5m).
func WithConfigErrorHold(d time.Duration) Option { return func(o *options) { o.configHold = d } }

// WithLogger sets the logger (default: discard). Tokens are logged only as
// fingerprints.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithClock sets the clock (default time.Now). Tests use it with miniredis.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithLocker replaces the redsync locker built on the cache's Redis client.
func WithLocker(l lock.Locker) Option { return func(o *options) { o.locker = l } }

// WithMode sets an app's token mode. Without it the mode comes from the
// Source if it has a Mode(appID) method, else Classic, the safe assumption.
func WithMode(appID string, m wechat.Mode) Option {
	return func(o *options) { o.modes[appID] = m }
}

// WithHooks sets callbacks for metrics.
func WithHooks(h Hooks) Option { return func(o *options) { o.hooks = h } }

// Hooks observe the cache, e.g. for Prometheus. Each may be nil; each must
// be fast and must not block.
type Hooks struct {
	// OnFetch is called after every upstream fetch attempt.
	OnFetch func(FetchEvent)
	// OnLockWait is called when a caller waited for another holder's fetch.
	OnLockWait func(appID string, waited time.Duration)
	// OnChange is called when an announcement says an app's record changed
	// (stored, capped, restored), e.g. so a scheduler can plan again.
	OnChange func(appID string)
	// OnKilledOutside is called when an app's current token was verified
	// dead before its usable end: killed by a fetch outside the fleet.
	OnKilledOutside func(appID string)
}

// FetchEvent describes one upstream fetch attempt.
type FetchEvent struct {
	AppID    string
	Result   string // "ok", "refused" (write lost the compare-and-set), "transient", "quota", "config", "budget", "error"
	Duration time.Duration
	Err      error
}

func (o *options) validate() error {
	var errs []error
	if o.keyPrefix == "" || strings.ContainsAny(o.keyPrefix, "{}") {
		errs = append(errs, fmt.Errorf("key prefix %q: must be non-empty and contain no '{' or '}'", o.keyPrefix))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"refresh ahead", o.refreshAhead}, {"margin", o.margin}, {"overlap", o.overlap}, {"lock TTL", o.lockTTL}, {"fetch timeout", o.fetchTimeout}, {"backoff base", o.backoffBase}, {"backoff max", o.backoffMax}, {"config error hold", o.configHold}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s %v: must be positive", d.name, d.v))
		}
	}
	if o.nearMaxAge < 0 {
		errs = append(errs, fmt.Errorf("near max age %v: must not be negative", o.nearMaxAge))
	}
	if o.dailyBudget < 0 {
		errs = append(errs, fmt.Errorf("daily budget %d: must not be negative", o.dailyBudget))
	}
	if o.passiveLimit < 0 || o.passiveLimit > 0 && o.passiveWindow <= 0 {
		errs = append(errs, fmt.Errorf("passive refresh limit %d per %v: must not be negative, and its window positive", o.passiveLimit, o.passiveWindow))
	}
	if o.scheduleReserve < 0 {
		errs = append(errs, fmt.Errorf("schedule reserve %d: must not be negative", o.scheduleReserve))
	}
	if o.fetchTimeout >= o.lockTTL {
		errs = append(errs, fmt.Errorf("fetch timeout %v: must be shorter than the lock TTL %v, or a fetch outlives its lock", o.fetchTimeout, o.lockTTL))
	}
	if o.horizon() <= 0 {
		errs = append(errs, fmt.Errorf("overlap %v: must exceed margin %v, or no copy could be served after Redis confirmed it", o.overlap, o.margin))
	}
	if o.capWindow() <= 0 {
		errs = append(errs, fmt.Errorf("overlap %v: must exceed margin %v + near max age %v, or a token that a fetch invalidates cannot leave the caches in time", o.overlap, o.margin, o.nearMaxAge))
	}
	if o.backoffMax < o.backoffBase {
		errs = append(errs, fmt.Errorf("backoff max %v: must not be below backoff base %v", o.backoffMax, o.backoffBase))
	}
	if o.now == nil {
		errs = append(errs, errors.New("clock: must not be nil"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("tokencache: invalid options: %w", errors.Join(errs...))
	}
	return nil
}

// capWindow is how long after a fetch is sent a token it may invalidate can
// still be handed out: it must be gone from Redis (margin) and from every
// near cache (near max age) before WeChat's overlap ends.
func (o *options) capWindow() time.Duration { return o.overlap - o.margin - o.nearMaxAge }

// horizon is how long after Redis last confirmed a copy it may be served:
// any fetch that can kill the token was sent after that confirmation, and
// WeChat keeps the token the overlap after such a fetch; the margin covers
// the time a caller takes to use what it was handed.
func (o *options) horizon() time.Duration { return o.overlap - o.margin }

// reserve is the part of the daily budget passive refreshes may not use.
func (o *options) reserve() int { return min(o.scheduleReserve, o.dailyBudget/5) }

// lifetimes computes when a fresh token becomes due and stops being usable.
func (o *options) lifetimes(fetchedAt time.Time, expiresIn time.Duration) (refreshAt, usableUntil time.Time) {
	margin := min(o.margin, expiresIn/5)
	usable := expiresIn - margin
	ahead := min(o.refreshAhead, usable/2)
	return fetchedAt.Add(usable - ahead), fetchedAt.Add(usable)
}
