package tokencache

import (
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/tokenkeeper/tokenkeeper/pkg/fieldcheck"
	"github.com/tokenkeeper/tokenkeeper/pkg/lock"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// Option configures a Cache.
type Option func(*options)

// Config holds the cache's rules and timings. Build it from DefaultConfig;
// Validate states every rule it must obey (New enforces them), naming each
// field by its Go name, so a caller filling it from a file can report the
// same problems under its own keys.
type Config struct {
	KeyPrefix       string        // of every Redis key and the events channel; no '{' or '}'
	RefreshAhead    time.Duration // a refresh is due this long before the usable end
	Margin          time.Duration // a token stops being handed out this long before WeChat's expiry
	Overlap         time.Duration // how long WeChat keeps a replaced classic token
	LockTTL         time.Duration // the fetch lock's and a fetch intent's expiry
	FetchTimeout    time.Duration // bounds one upstream fetch
	NearMaxAge      time.Duration // a current copy is re-read before it is this old; 0: no near cache
	DailyBudget     int           // fetches per app per Beijing day, fleet-wide; 0: no cap
	PassiveLimit    int           // passive refreshes per passive_window per app, fleet-wide; 0: no cap
	PassiveWindow   time.Duration // the window of PassiveLimit
	ScheduleReserve int           // the budget's last fetches, kept from passive refreshes
	BackoffBase     time.Duration // the first wait after a transient failure
	BackoffMax      time.Duration // the longest
	ConfigHold      time.Duration // fetching stops this long after a configuration error
}

// DefaultConfig is the configuration New starts from.
func DefaultConfig() Config {
	return Config{
		KeyPrefix:       "tokenkeeper:",
		RefreshAhead:    5 * time.Minute,
		Margin:          time.Minute,
		Overlap:         5 * time.Minute,
		LockTTL:         15 * time.Second,
		FetchTimeout:    10 * time.Second,
		NearMaxAge:      10 * time.Second,
		DailyBudget:     1500,
		PassiveLimit:    6,
		PassiveWindow:   time.Minute,
		ScheduleReserve: 300,
		BackoffBase:     time.Second,
		BackoffMax:      time.Minute,
		ConfigHold:      5 * time.Minute,
	}
}

// Validate reports every rule c breaks, as a *fieldcheck.Error; nil if none.
func (c Config) Validate() error {
	var l fieldcheck.List
	if c.KeyPrefix == "" || strings.ContainsAny(c.KeyPrefix, "{}") {
		l.Add("KeyPrefix", "must be non-empty and contain no '{' or '}' (they would break the per-app hash tag)")
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{{"RefreshAhead", c.RefreshAhead}, {"Margin", c.Margin}, {"Overlap", c.Overlap}, {"LockTTL", c.LockTTL}, {"FetchTimeout", c.FetchTimeout},
		{"BackoffBase", c.BackoffBase}, {"BackoffMax", c.BackoffMax}, {"ConfigHold", c.ConfigHold}} {
		if d.v <= 0 {
			l.Add(d.field, "%v: must be positive", d.v)
		}
	}
	if c.NearMaxAge < 0 {
		l.Add("NearMaxAge", "%v: must not be negative", c.NearMaxAge)
	}
	if c.DailyBudget < 0 {
		l.Add("DailyBudget", "%d: must not be negative (0 = no cap)", c.DailyBudget)
	}
	if c.PassiveLimit < 0 {
		l.Add("PassiveLimit", "%d: must not be negative (0 = no cap)", c.PassiveLimit)
	}
	if c.PassiveLimit > 0 && c.PassiveWindow <= 0 {
		l.Add("PassiveWindow", "%v: must be positive while {{PassiveLimit}} is set", c.PassiveWindow)
	}
	if c.ScheduleReserve < 0 {
		l.Add("ScheduleReserve", "%d: must not be negative", c.ScheduleReserve)
	}
	if c.FetchTimeout > 0 && c.FetchTimeout >= c.LockTTL {
		l.Add("FetchTimeout", "%v must be shorter than {{LockTTL}} %v, or a fetch outlives its lock", c.FetchTimeout, c.LockTTL)
	}
	switch {
	case c.Overlap > 0 && c.horizon() <= 0:
		l.Add("Overlap", "%v must exceed {{Margin}} %v, or no copy could be served after Redis confirmed it", c.Overlap, c.Margin)
	case c.Overlap > 0 && c.capWindow() <= 0:
		l.Add("Overlap", "%v must exceed {{Margin}} %v + {{NearMaxAge}} %v, or a token a fetch invalidates cannot leave the caches in time", c.Overlap, c.Margin, c.NearMaxAge)
	}
	if c.BackoffMax < c.BackoffBase {
		l.Add("BackoffMax", "%v must not be below {{BackoffBase}} %v", c.BackoffMax, c.BackoffBase)
	}
	return l.Err("tokencache: invalid config")
}

// capWindow is how long after a fetch is sent a token it may invalidate can
// still be handed out: it must be gone from Redis (margin) and from every
// near cache (near max age) before WeChat's overlap ends.
func (c Config) capWindow() time.Duration { return c.Overlap - c.Margin - c.NearMaxAge }

// horizon is how long after Redis last confirmed a copy it may be served:
// any fetch that can kill the token was sent after that confirmation, and
// WeChat keeps the token the overlap after such a fetch; the margin covers
// the time a caller takes to use what it was handed.
func (c Config) horizon() time.Duration { return c.Overlap - c.Margin }

// reserve is the part of the daily budget passive refreshes may not use.
func (c Config) reserve() int { return min(c.ScheduleReserve, c.DailyBudget/5) }

// Lifetimes is when a token fetched at fetchedAt, which WeChat said expires
// in expiresIn, becomes due and stops being handed out: the margin is at
// most a fifth of the lifetime, the refresh-ahead at most half the usable
// life.
func (c Config) Lifetimes(fetchedAt time.Time, expiresIn time.Duration) (refreshAt, usableUntil time.Time) {
	margin := min(c.Margin, expiresIn/5)
	usable := expiresIn - margin
	ahead := min(c.RefreshAhead, usable/2)
	return fetchedAt.Add(usable - ahead), fetchedAt.Add(usable)
}

type options struct {
	Config
	logger   *slog.Logger
	now      func() time.Time
	clockSet bool // WithClock: the hit path reads it too
	locker   lock.Locker
	modes    map[string]wechat.Mode
	hooks    Hooks
	kind     string // a ticket cache's ticket kind; "" for access tokens
	spread   bool   // WithRefreshSpread
}

func defaultOptions() options {
	return options{Config: DefaultConfig(), now: time.Now, modes: map[string]wechat.Mode{}}
}

// WithConfig replaces the whole Config (start from DefaultConfig).
func WithConfig(c Config) Option { return func(o *options) { o.Config = c } }

// WithKeyPrefix sets the prefix of every Redis key and of the events
// channel (default "tokenkeeper:"). It may not contain '{' or '}', which
// would break the per-app hash tag.
func WithKeyPrefix(p string) Option { return func(o *options) { o.KeyPrefix = p } }

// WithRefreshAhead sets how long before a token's usable end a refresh
// becomes due (default 5m). It is clamped to half the token's usable life,
// so a short-lived token is not refreshed the moment it arrives.
func WithRefreshAhead(d time.Duration) Option { return func(o *options) { o.RefreshAhead = d } }

// WithMargin sets how long before WeChat's own expiry a token stops being
// handed out (default 1m): the key's TTL is expires_in minus the margin.
// It is clamped to a fifth of expires_in, so a short lifetime (a stable
// token can say 300 s) never gives a zero or negative TTL.
func WithMargin(d time.Duration) Option { return func(o *options) { o.Margin = d } }

// WithOverlap sets how long WeChat keeps accepting a classic token after a
// newer one was minted (default 5m, WeChat's documented value). Change it
// only for a test upstream with a shorter grace.
func WithOverlap(d time.Duration) Option { return func(o *options) { o.Overlap = d } }

// WithLockTTL sets the expiry of the per-app fetch lock and of a fetch's
// intent (default 15s). It must exceed the fetch timeout.
func WithLockTTL(d time.Duration) Option { return func(o *options) { o.LockTTL = d } }

// WithFetchTimeout bounds one upstream fetch (default 10s).
func WithFetchTimeout(d time.Duration) Option { return func(o *options) { o.FetchTimeout = d } }

// WithNearMaxAge sets how long a process trusts its in-memory copy without
// re-reading Redis (default 10s; 0 turns the near cache off). It covers a
// lost change message, so it must stay well under the overlap.
func WithNearMaxAge(d time.Duration) Option { return func(o *options) { o.NearMaxAge = d } }

// WithDailyBudget caps upstream fetches per app per Beijing day, counted in
// Redis across every process (default 1500, under WeChat's 2000; 0 = no cap).
func WithDailyBudget(n int) Option { return func(o *options) { o.DailyBudget = n } }

// WithPassiveRefreshLimit caps fetches caused by Invalidate (tokens
// verified dead) at n per window for each app, counted in Redis across every
// process (default 6 a minute; n = 0: no cap), and keeps the last reserve
// fetches of each day's budget for refreshes ahead of expiry and misses
// (default 300, at most a fifth of the budget), so passive refreshes can
// never starve them.
func WithPassiveRefreshLimit(n int, window time.Duration, reserve int) Option {
	return func(o *options) { o.PassiveLimit, o.PassiveWindow, o.ScheduleReserve = n, window, reserve }
}

// WithBackoff sets the exponential backoff, with jitter, after transient
// upstream failures (default 1s doubling to 1m).
func WithBackoff(base, max time.Duration) Option {
	return func(o *options) { o.BackoffBase, o.BackoffMax = base, max }
}

// WithConfigErrorHold sets how long fetching stops for an app after a
// configuration error such as a wrong secret (default 5m).
func WithConfigErrorHold(d time.Duration) Option { return func(o *options) { o.ConfigHold = d } }

// WithLogger sets the logger (default: discard). Tokens are logged only as
// fingerprints.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithClock sets the clock (default time.Now). Tests use it with miniredis.
func WithClock(now func() time.Time) Option {
	return func(o *options) { o.now, o.clockSet = now, true }
}

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
	// (stored, capped, restored), and for every app after a (re)subscription,
	// when a change may have been missed, e.g. so a scheduler can plan again.
	OnChange func(appID string)
	// OnKilledOutside is called when an app's current token was verified
	// dead before its usable end: killed by a fetch outside the fleet.
	OnKilledOutside func(appID string)
}

// FetchEvent describes one upstream fetch attempt.
type FetchEvent struct {
	AppID    string
	Kind     string // "" for an access token; the ticket kind for a ticket cache (NewTickets)
	Result   string // "ok", "refused" (write lost the compare-and-set), "budget", "limited" (passive refresh rate), or wechat.ClassName of the failure
	Duration time.Duration
	Err      error
}

func (o *options) validate() error {
	err := o.Config.Validate()
	if o.now == nil {
		err = errors.Join(err, errors.New("tokencache: clock: must not be nil"))
	}
	return err
}
