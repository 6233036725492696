package chaos

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/tokenkeeper/tokenkeeper/pkg/fieldcheck"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
)

// CacheTimings are the tokencache options every reader and every replica
// uses; they must fit the fake's token lifetime and grace.
type CacheTimings struct {
	RefreshAhead time.Duration
	Margin       time.Duration
	NearMaxAge   time.Duration
	LockTTL      time.Duration
	FetchTimeout time.Duration
}

// config is the tokencache configuration of a chaos process with these
// timings, on the run's key prefix and the fake's grace: the library's
// defaults for the rest, and its rules (Validate, Lifetimes).
func (c CacheTimings) config(prefix string, grace time.Duration) tokencache.Config {
	cfg := tokencache.DefaultConfig()
	cfg.KeyPrefix, cfg.Overlap, cfg.Margin, cfg.NearMaxAge = prefix, grace, c.Margin, c.NearMaxAge
	cfg.RefreshAhead, cfg.LockTTL, cfg.FetchTimeout = c.RefreshAhead, c.LockTTL, c.FetchTimeout
	return cfg
}

// options are the tokencache options of a chaos process with these
// timings, on the run's key prefix and the fake's grace.
func (c CacheTimings) options(prefix string, grace time.Duration, more ...tokencache.Option) []tokencache.Option {
	return append([]tokencache.Option{tokencache.WithConfig(c.config(prefix, grace))}, more...)
}

// cacheFieldName is the name of a tokencache.Config field in this tool's
// flags and messages.
func cacheFieldName(field string) string {
	if n, ok := cacheFieldNames[field]; ok {
		return n
	}
	return field
}

var cacheFieldNames = map[string]string{
	"KeyPrefix": "key prefix", "Overlap": "grace", "Margin": "margin", "NearMaxAge": "near max age",
	"RefreshAhead": "refresh ahead", "LockTTL": "lock TTL", "FetchTimeout": "fetch timeout",
}

// LeaseTimings configure the replicas' leader election.
type LeaseTimings struct {
	Duration      time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration
}

// Config describes one chaos run. Zero fields take the defaults of
// DefaultConfig.
type Config struct {
	Apps          int           // apps served (named AppID(0..Apps-1))
	Duration      time.Duration // from the readers' start to their stop
	TokenLifetime time.Duration // the fake's token lifetime
	Grace         time.Duration // the fake's overlap after a new token is minted
	Readers       int           // reader processes
	Goroutines    int           // goroutines per reader
	Interval      time.Duration // pause between two business calls of one goroutine
	// GatewayGoroutines is how many SDK-style goroutines per reader call
	// through the replicas' gateways (sdk.go); -1: none. With no replicas
	// there is no gateway and none run.
	GatewayGoroutines int
	Replicas          int  // refresher replicas; 0 runs readers only
	Faults            bool // inject the fault schedule

	// StopFor is how long the fetch-lock holder stays frozen (default:
	// lock TTL + 1s, longer than the lock's expiry).
	StopFor time.Duration
	// RedisOutage is how long Redis is paused while tokens are still valid.
	RedisOutage time.Duration

	Cache     CacheTimings
	Lease     LeaseTimings
	KeyPrefix string

	ReaderBin    string // the chaos binary, run as "ReaderBin reader ..."
	RefresherBin string // the refresher binary (needed when Replicas > 0)
	RedisBin     string // redis-server (default: found on PATH)
	WorkDir      string // configs and logs of the children (must exist)

	// Log receives the schedule and progress lines (nil: discarded).
	Log io.Writer
}

// DefaultConfig is the short variant: 3 apps, 20 s tokens with a 5 s
// grace, 10 readers of 20 goroutines, 3 replicas, 75 s (one cycle of
// faults, 5.5 s apart, between the warm-up and the tail).
func DefaultConfig() Config {
	return Config{
		Apps:          3,
		Duration:      75 * time.Second,
		TokenLifetime: 20 * time.Second,
		Grace:         5 * time.Second,
		Readers:       10,
		Goroutines:    20,
		Interval:      500 * time.Millisecond,
		Replicas:      3,

		GatewayGoroutines: 5,
		Faults:            true,
		RedisOutage:       3 * time.Second,
		Cache: CacheTimings{
			RefreshAhead: 6 * time.Second,
			Margin:       time.Second,
			NearMaxAge:   time.Second,
			LockTTL:      3 * time.Second,
			FetchTimeout: 2 * time.Second,
		},
		Lease: LeaseTimings{
			Duration:      3 * time.Second,
			RenewDeadline: 2 * time.Second,
			RetryPeriod:   500 * time.Millisecond,
		},
		KeyPrefix: "chaos:",
	}
}

// gatewayGoroutines is how many SDK goroutines each reader runs.
func (c *Config) gatewayGoroutines() int {
	if c.Replicas == 0 || c.GatewayGoroutines < 0 {
		return 0
	}
	return c.GatewayGoroutines
}

// AppID names the i-th app of a run.
func AppID(i int) string { return fmt.Sprintf("wxchaos%05d", i) }

// AppIDs names the apps of a run.
func AppIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = AppID(i)
	}
	return ids
}

func (c *Config) fillDefaults() {
	d := DefaultConfig()
	setInt := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	setDur := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	setInt(&c.Apps, d.Apps)
	setInt(&c.Readers, d.Readers)
	setInt(&c.Goroutines, d.Goroutines)
	setInt(&c.GatewayGoroutines, d.GatewayGoroutines)
	setDur(&c.Duration, d.Duration)
	setDur(&c.TokenLifetime, d.TokenLifetime)
	setDur(&c.Grace, d.Grace)
	setDur(&c.Interval, d.Interval)
	setDur(&c.RedisOutage, d.RedisOutage)
	setDur(&c.Cache.RefreshAhead, d.Cache.RefreshAhead)
	setDur(&c.Cache.Margin, d.Cache.Margin)
	setDur(&c.Cache.NearMaxAge, d.Cache.NearMaxAge)
	setDur(&c.Cache.LockTTL, d.Cache.LockTTL)
	setDur(&c.Cache.FetchTimeout, d.Cache.FetchTimeout)
	setDur(&c.Lease.Duration, d.Lease.Duration)
	setDur(&c.Lease.RenewDeadline, d.Lease.RenewDeadline)
	setDur(&c.Lease.RetryPeriod, d.Lease.RetryPeriod)
	setDur(&c.StopFor, c.Cache.LockTTL+time.Second)
	if c.KeyPrefix == "" {
		c.KeyPrefix = d.KeyPrefix
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
}

func (c *Config) validate() error {
	var errs []error
	if c.Apps < 1 || c.Apps > 100000 {
		errs = append(errs, fmt.Errorf("apps %d: must be 1..100000", c.Apps))
	}
	if c.Readers < 1 || c.Readers > 200 {
		errs = append(errs, fmt.Errorf("readers %d: must be 1..200", c.Readers))
	}
	if c.Goroutines < 1 || c.Goroutines > 1000 {
		errs = append(errs, fmt.Errorf("goroutines %d: must be 1..1000", c.Goroutines))
	}
	if c.GatewayGoroutines < -1 || c.GatewayGoroutines > 1000 {
		errs = append(errs, fmt.Errorf("gateway goroutines %d: must be -1 (none) or 1..1000", c.GatewayGoroutines))
	}
	if c.Replicas < 0 || c.Replicas > 20 {
		errs = append(errs, fmt.Errorf("replicas %d: must be 0..20", c.Replicas))
	}
	if c.Duration < 10*time.Second || c.Duration > 24*time.Hour {
		errs = append(errs, fmt.Errorf("duration %v: must be 10s..24h", c.Duration))
	}
	if c.ReaderBin == "" {
		errs = append(errs, errors.New("reader binary: empty (the chaos binary, run as \"<bin> reader\")"))
	}
	if c.Replicas > 0 && c.RefresherBin == "" {
		errs = append(errs, errors.New("refresher binary: empty, but replicas are requested"))
	}
	if c.WorkDir == "" {
		errs = append(errs, errors.New("work dir: empty"))
	}
	if c.Lease.Duration <= c.Lease.RenewDeadline || c.Lease.RenewDeadline <= c.Lease.RetryPeriod {
		errs = append(errs, fmt.Errorf("lease %v / renew deadline %v / retry period %v: must be decreasing", c.Lease.Duration, c.Lease.RenewDeadline, c.Lease.RetryPeriod))
	}
	if c.StopFor <= c.Cache.LockTTL {
		errs = append(errs, fmt.Errorf("stop-for %v: must exceed the lock TTL %v, or the frozen holder never loses its lock", c.StopFor, c.Cache.LockTTL))
	}
	// The outage measures serving through a Redis outage while tokens are
	// valid: it must end before a token refreshed just before it would
	// run out (its usable life after the refresh fell due).
	if due := c.UsableLife() - c.RefreshInterval(); c.Faults && c.RedisOutage >= due {
		errs = append(errs, fmt.Errorf("redis outage %v: must be shorter than the %v a due token stays usable, or tokens run out during it",
			c.RedisOutage, due))
	}
	// tokencache's own rules, which every child enforces: say it once
	// here, under this tool's names.
	var fe *fieldcheck.Error
	if err := c.Cache.config(c.KeyPrefix, c.Grace).Validate(); errors.As(err, &fe) {
		for _, p := range fe.Problems {
			errs = append(errs, errors.New(cacheFieldName(p.Field)+" "+p.Text(cacheFieldName)))
		}
	} else if err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("chaos: invalid config: %w", errors.Join(errs...))
	}
	return nil
}

// RefreshInterval is how long one token serves before the next fetch is
// due, by tokencache's own rule (Config.Lifetimes). It is the ideal's
// period.
func (c *Config) RefreshInterval() time.Duration {
	var t0 time.Time
	refreshAt, _ := c.Cache.config(c.KeyPrefix, c.Grace).Lifetimes(t0, c.TokenLifetime)
	return refreshAt.Sub(t0)
}

// UsableLife is how long a fresh token is handed out, by tokencache's own
// rule (Config.Lifetimes).
func (c *Config) UsableLife() time.Duration {
	var t0 time.Time
	_, usableUntil := c.Cache.config(c.KeyPrefix, c.Grace).Lifetimes(t0, c.TokenLifetime)
	return usableUntil.Sub(t0)
}
