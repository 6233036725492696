package config

import (
	"log/slog"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/scheduler"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// EnvPrefix starts every environment variable the refresher reads.
const EnvPrefix = "TOKENKEEPER_"

// Config is the refresher's validated configuration. Load builds it; a
// Config built by hand (demo mode, tests) should go through Validate.
type Config struct {
	// Identity names this replica in the leader election. Default
	// hostname-pid.
	Identity string
	Redis    Redis
	WeChat   WeChat
	Apps     []App
	Cache    Cache
	Lease    Lease
	HTTP     HTTP
	Log      Log
	// Scheduler and Metrics size the leader's work and its /metrics for
	// the fleet.
	Scheduler Scheduler
	Metrics   Metrics

	// File is the configuration file that was read ("" if none).
	File string
	// UnusedEnv lists the TOKENKEEPER_ variables that were set but not
	// read: most likely typos, or per-app variables of an unlisted app.
	UnusedEnv []string
}

// Redis says how to reach the Redis holding tokens and the lease.
type Redis struct {
	// Addrs: one address for a standalone server, several for a Cluster,
	// the Sentinels' addresses when MasterName is set.
	Addrs    []string
	Username string
	Password wechat.Secret
	// PasswordFrom says where Password came from, for Print.
	PasswordFrom string
	DB           int
	TLS          bool
	// MasterName selects Sentinel mode.
	MasterName string
}

// WeChat says how to reach the token endpoints.
type WeChat struct {
	BaseURL string
	Timeout time.Duration
}

// App is one WeChat app whose token the refresher keeps.
type App struct {
	ID     string
	Secret wechat.Secret
	Mode   wechat.Mode
	// SecretFrom says where Secret came from ("inline", "env NAME",
	// "file PATH"), for Print.
	SecretFrom string
}

// Cache is tokencache's configuration: its rules and defaults live there.
type Cache = tokencache.Config

// cacheKeys and leaseKeys are the one table from the fields of
// tokencache.Config and lock.ElectorConfig to this file's keys; the env
// variable of each key is EnvName(key). Fields not listed keep their
// defaults.
var (
	cacheKeys = map[string]string{
		"KeyPrefix": "cache.key_prefix", "RefreshAhead": "cache.refresh_ahead", "Margin": "cache.margin",
		"Overlap": "cache.overlap", "LockTTL": "cache.lock_ttl", "FetchTimeout": "cache.fetch_timeout",
		"NearMaxAge": "cache.near_max_age", "DailyBudget": "cache.daily_budget",
	}
	leaseKeys = map[string]string{
		"Name": "lease.name", "Identity": "identity", "LeaseDuration": "lease.duration",
		"RenewDeadline": "lease.renew_deadline", "RetryPeriod": "lease.retry_period",
	}
)

// Lease holds the leader election's timings, as in client-go:
// Duration > RenewDeadline > RetryPeriod.
type Lease struct {
	Name          string
	Duration      time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration
}

// HTTP configures the token API.
type HTTP struct {
	Addr    string
	APIKeys []APIKey
	// InvalidateRate is how many passive refreshes per second one app may
	// ask for.
	InvalidateRate float64
}

// APIKey lets the bearer of Key read the tokens of Apps ("*" = all).
type APIKey struct {
	Name    string
	Key     wechat.Secret
	Apps    []string
	KeyFrom string
}

// Scheduler configures the leader's refresh scheduler.
type Scheduler struct {
	// MaxConcurrent bounds the refreshes (upstream fetches) under way at
	// once: a cold start of N apps against an upstream L away takes at
	// least N*L/MaxConcurrent.
	MaxConcurrent int
}

// MaxConcurrentLimit is the largest scheduler.max_concurrent: enough for
// 100,000 apps against an upstream 500 ms away in under a minute.
const MaxConcurrentLimit = 1000

// Metrics configures /metrics.
type Metrics struct {
	// PerApp is "auto" (per-app series for at most metrics.PerAppLimit
	// apps, aggregate beyond), "on" or "off".
	PerApp string
}

// Log configures the process's slog logger.
type Log struct {
	Level  slog.Level
	Format string // "text" or "json"
}

// AppIDs returns the configured appids in order.
func (c *Config) AppIDs() []string {
	ids := make([]string, len(c.Apps))
	for i, a := range c.Apps {
		ids[i] = a.ID
	}
	return ids
}

// defaults are the values of every scalar key before the file, the
// environment and flags are applied. They are also the set of scalar keys
// the environment may set: a key missing here cannot be set by a variable.
var defaultCache = tokencache.DefaultConfig()

var defaults = map[string]any{
	"identity":                 "",
	"redis.addrs":              []string{"127.0.0.1:6379"},
	"redis.username":           "",
	"redis.password":           "",
	"redis.password_env":       "",
	"redis.password_file":      "",
	"redis.db":                 0,
	"redis.tls":                false,
	"redis.master_name":        "",
	"wechat.base_url":          wechat.DefaultBaseURL,
	"wechat.timeout":           "10s",
	"cache.key_prefix":         defaultCache.KeyPrefix,
	"cache.refresh_ahead":      defaultCache.RefreshAhead.String(),
	"cache.margin":             defaultCache.Margin.String(),
	"cache.overlap":            defaultCache.Overlap.String(),
	"cache.lock_ttl":           defaultCache.LockTTL.String(),
	"cache.fetch_timeout":      defaultCache.FetchTimeout.String(),
	"cache.near_max_age":       defaultCache.NearMaxAge.String(),
	"cache.daily_budget":       defaultCache.DailyBudget,
	"lease.name":               "tokenkeeper:leader",
	"lease.duration":           "15s",
	"lease.renew_deadline":     "10s",
	"lease.retry_period":       "2s",
	"http.addr":                "127.0.0.1:8080",
	"http.invalidate_rate":     1.0,
	"log.level":                "info",
	"log.format":               "text",
	"scheduler.max_concurrent": scheduler.DefaultMaxConcurrent,
	"metrics.per_app":          "auto",
}

// rawConfig is the file's shape, decoded by viper (mapstructure) before
// secrets are resolved and durations parsed, so that every error can name
// its field.
type rawConfig struct {
	Identity string    `mapstructure:"identity"`
	Redis    rawRedis  `mapstructure:"redis"`
	WeChat   rawWeChat `mapstructure:"wechat"`
	Apps     []rawApp  `mapstructure:"apps"`
	Cache    rawCache  `mapstructure:"cache"`
	Lease    rawLease  `mapstructure:"lease"`
	HTTP     rawHTTP   `mapstructure:"http"`
	Log      rawLog    `mapstructure:"log"`

	Scheduler rawScheduler `mapstructure:"scheduler"`
	Metrics   rawMetrics   `mapstructure:"metrics"`
}

type rawScheduler struct {
	MaxConcurrent int `mapstructure:"max_concurrent"`
}

type rawMetrics struct {
	PerApp string `mapstructure:"per_app"`
}

type rawRedis struct {
	Addrs        []string `mapstructure:"addrs"`
	Username     string   `mapstructure:"username"`
	Password     string   `mapstructure:"password"`
	PasswordEnv  string   `mapstructure:"password_env"`
	PasswordFile string   `mapstructure:"password_file"`
	DB           int      `mapstructure:"db"`
	TLS          bool     `mapstructure:"tls"`
	MasterName   string   `mapstructure:"master_name"`
}

type rawWeChat struct {
	BaseURL string `mapstructure:"base_url"`
	Timeout string `mapstructure:"timeout"`
}

type rawApp struct {
	ID         string `mapstructure:"id"`
	Secret     string `mapstructure:"secret"`
	SecretEnv  string `mapstructure:"secret_env"`
	SecretFile string `mapstructure:"secret_file"`
	Mode       string `mapstructure:"mode"`

	inlineFrom string // where an inline secret came from, if not the file
}

type rawCache struct {
	KeyPrefix    string `mapstructure:"key_prefix"`
	RefreshAhead string `mapstructure:"refresh_ahead"`
	Margin       string `mapstructure:"margin"`
	Overlap      string `mapstructure:"overlap"`
	LockTTL      string `mapstructure:"lock_ttl"`
	FetchTimeout string `mapstructure:"fetch_timeout"`
	NearMaxAge   string `mapstructure:"near_max_age"`
	DailyBudget  int    `mapstructure:"daily_budget"`
}

type rawLease struct {
	Name          string `mapstructure:"name"`
	Duration      string `mapstructure:"duration"`
	RenewDeadline string `mapstructure:"renew_deadline"`
	RetryPeriod   string `mapstructure:"retry_period"`
}

type rawHTTP struct {
	Addr           string      `mapstructure:"addr"`
	APIKeys        []rawAPIKey `mapstructure:"api_keys"`
	InvalidateRate float64     `mapstructure:"invalidate_rate"`
}

type rawAPIKey struct {
	Name    string   `mapstructure:"name"`
	Key     string   `mapstructure:"key"`
	KeyEnv  string   `mapstructure:"key_env"`
	KeyFile string   `mapstructure:"key_file"`
	Apps    []string `mapstructure:"apps"`

	inlineFrom string
}

type rawLog struct {
	Level  string `mapstructure:"level"`
	Format string `mapstructure:"format"`
}
