package config

import (
	"log/slog"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/gateway"
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
	Metrics  Metrics
	Log      Log
	Gateway  Gateway
	// Scheduler sizes the leader's work for the fleet.
	Scheduler Scheduler

	// File is the configuration file that was read ("" if none).
	File string
	// UnusedEnv lists the TOKENKEEPER_ variables that were set but not
	// read: most likely typos, or per-app variables of an unlisted app.
	UnusedEnv []string
	// Warnings are things that work but should not be so (a secret file
	// readable by everyone); the caller logs them. They name paths, never
	// secrets.
	Warnings []string
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
	// TLSCAFile is a PEM file of the CAs the server's certificate must
	// chain to ("" = the system's roots); TLSCertFile and TLSKeyFile are
	// the client certificate for servers that require one; TLSServerName
	// is the name the server's certificate must carry (default: the host
	// of a single address). They need TLS.
	TLSCAFile, TLSCertFile, TLSKeyFile, TLSServerName string
	// LockAddrs, when set, are independent Redis masters (at least
	// MinLockAddrs) that hold the fetch locks and the leader lease instead
	// of Addrs: a lock is held when a majority granted it (redsync's
	// Redlock), so losing a minority of them, or a failover of the data
	// Redis, loses no lock.
	LockAddrs []string

	tlsFiles *tlsFiles // the TLS files as Load or Validate read them
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
	// Tickets are the ticket kinds (wechat.TicketJSAPI, wechat.TicketWxCard)
	// kept warm and served for the app; none by default.
	Tickets []string
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
		"ConfigHold": "cache.config_hold",
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
	// AllowUnauthenticated lets serve run without API keys on an address
	// other than loopback. Without it, that is refused: anyone who can
	// reach the port could read every token.
	AllowUnauthenticated bool
	// TLS, when its files are set, serves the API over HTTPS.
	TLS TLSFiles
}

// TLSFiles names a PEM certificate (chain) and its key. Both or neither.
// They are re-read on a reload (see package internal/tlsfiles).
type TLSFiles struct {
	CertFile string
	KeyFile  string
}

// Enabled reports whether TLS is configured.
func (t TLSFiles) Enabled() bool { return t.CertFile != "" || t.KeyFile != "" }

// Metrics configures the operations listener.
type Metrics struct {
	// Addr, when set, serves /metrics, /healthz and /readyz on a listener
	// of their own, and no longer /metrics on the API's; "" keeps them on
	// the API's listener.
	Addr string
	// PerApp is "auto" (per-app series for at most metrics.PerAppLimit
	// apps, aggregate beyond), "on" or "off".
	PerApp string
}

// APIKey lets the bearer of Key read the tokens of Apps ("*" = all).
type APIKey struct {
	Name    string
	Key     wechat.Secret
	Apps    []string
	KeyFrom string
	// PageHosts, if set, are the only page hosts the key may have JS-SDK
	// configs signed for.
	PageHosts []string
	// Admin lets the key call the admin endpoints (POST /admin/reload).
	Admin bool
}

// Gateway configures the WeChat-compatible gateway (package gateway), on
// a listener of its own; Addr "" leaves it off.
type Gateway struct {
	Addr string
	// Credentials are the per-client gateway credentials an SDK uses as its
	// "secret"; the same shape and rules as HTTP API keys.
	Credentials     []APIKey
	AcceptAppSecret bool
	MaxBody         int64
	RetryBuffer     int64
	Timeout         time.Duration
	MaxConcurrent   int
	AccessLog       bool
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
	"identity":              "",
	"redis.addrs":           []string{"127.0.0.1:6379"},
	"redis.username":        "",
	"redis.password":        "",
	"redis.password_env":    "",
	"redis.password_file":   "",
	"redis.db":              0,
	"redis.tls":             false,
	"redis.master_name":     "",
	"redis.tls_ca_file":     "",
	"redis.tls_cert_file":   "",
	"redis.tls_key_file":    "",
	"redis.tls_server_name": "",
	"redis.lock_addrs":      []string{},
	"wechat.base_url":       wechat.DefaultBaseURL,
	"wechat.timeout":        "10s",
	"cache.key_prefix":      defaultCache.KeyPrefix,
	"cache.refresh_ahead":   defaultCache.RefreshAhead.String(),
	"cache.margin":          defaultCache.Margin.String(),
	"cache.overlap":         defaultCache.Overlap.String(),
	"cache.lock_ttl":        defaultCache.LockTTL.String(),
	"cache.fetch_timeout":   defaultCache.FetchTimeout.String(),
	"cache.near_max_age":    defaultCache.NearMaxAge.String(),
	"cache.daily_budget":    defaultCache.DailyBudget,
	// After a configuration error the fleet sends one fetch per
	// config_hold (fleet-wide hold), and the leader's scheduler retries
	// the app then: 10m, longer than the library's default, since each
	// such fetch costs a call of the daily quota.
	"cache.config_hold":          "10m",
	"lease.name":                 "tokenkeeper:leader",
	"lease.duration":             "15s",
	"lease.renew_deadline":       "10s",
	"lease.retry_period":         "2s",
	"http.addr":                  "127.0.0.1:8080",
	"http.invalidate_rate":       1.0,
	"http.allow_unauthenticated": false,
	"http.tls.cert_file":         "",
	"http.tls.key_file":          "",
	"metrics.addr":               "",
	"log.level":                  "info",
	"log.format":                 "text",

	"gateway.addr":              "",
	"gateway.accept_app_secret": false,
	"gateway.max_body":          int(gateway.DefaultMaxBody),
	"gateway.retry_buffer":      int(gateway.DefaultRetryBuffer),
	"gateway.timeout":           gateway.DefaultTimeout.String(),
	"gateway.max_concurrent":    gateway.DefaultMaxConcurrent,
	"gateway.access_log":        false,
	"scheduler.max_concurrent":  scheduler.DefaultMaxConcurrent,
	"metrics.per_app":           "auto",
}

// rawConfig is the file's shape, decoded by viper (mapstructure) before
// secrets are resolved and durations parsed, so that every error can name
// its field.
type rawConfig struct {
	Identity  string       `mapstructure:"identity"`
	Redis     rawRedis     `mapstructure:"redis"`
	WeChat    rawWeChat    `mapstructure:"wechat"`
	Apps      []rawApp     `mapstructure:"apps"`
	Cache     rawCache     `mapstructure:"cache"`
	Lease     rawLease     `mapstructure:"lease"`
	HTTP      rawHTTP      `mapstructure:"http"`
	Metrics   rawMetrics   `mapstructure:"metrics"`
	Log       rawLog       `mapstructure:"log"`
	Gateway   rawGateway   `mapstructure:"gateway"`
	Scheduler rawScheduler `mapstructure:"scheduler"`
}

type rawScheduler struct {
	MaxConcurrent int `mapstructure:"max_concurrent"`
}

type rawMetrics struct {
	Addr   string `mapstructure:"addr"`
	PerApp string `mapstructure:"per_app"`
}

type rawTLS struct {
	CertFile string `mapstructure:"cert_file"`
	KeyFile  string `mapstructure:"key_file"`
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

	TLSCAFile     string   `mapstructure:"tls_ca_file"`
	TLSCertFile   string   `mapstructure:"tls_cert_file"`
	TLSKeyFile    string   `mapstructure:"tls_key_file"`
	TLSServerName string   `mapstructure:"tls_server_name"`
	LockAddrs     []string `mapstructure:"lock_addrs"`
}

type rawWeChat struct {
	BaseURL string `mapstructure:"base_url"`
	Timeout string `mapstructure:"timeout"`
}

type rawApp struct {
	ID         string   `mapstructure:"id"`
	Secret     string   `mapstructure:"secret"`
	SecretEnv  string   `mapstructure:"secret_env"`
	SecretFile string   `mapstructure:"secret_file"`
	Mode       string   `mapstructure:"mode"`
	Tickets    []string `mapstructure:"tickets"`

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
	// A string, parsed by resolve, so that an overflow is reported as
	// one rather than wrapped around to a negative number.
	DailyBudget string `mapstructure:"daily_budget"`
	ConfigHold  string `mapstructure:"config_hold"`
}

type rawLease struct {
	Name          string `mapstructure:"name"`
	Duration      string `mapstructure:"duration"`
	RenewDeadline string `mapstructure:"renew_deadline"`
	RetryPeriod   string `mapstructure:"retry_period"`
}

type rawHTTP struct {
	Addr                 string      `mapstructure:"addr"`
	APIKeys              []rawAPIKey `mapstructure:"api_keys"`
	InvalidateRate       float64     `mapstructure:"invalidate_rate"`
	AllowUnauthenticated bool        `mapstructure:"allow_unauthenticated"`
	TLS                  rawTLS      `mapstructure:"tls"`
}

type rawAPIKey struct {
	Name    string   `mapstructure:"name"`
	Key     string   `mapstructure:"key"`
	KeyEnv  string   `mapstructure:"key_env"`
	KeyFile string   `mapstructure:"key_file"`
	Apps    []string `mapstructure:"apps"`
	// PageHosts limits jssdk-config to these page hosts.
	PageHosts []string `mapstructure:"page_hosts"`
	Admin     bool     `mapstructure:"admin"`

	inlineFrom string
}

type rawLog struct {
	Level  string `mapstructure:"level"`
	Format string `mapstructure:"format"`
}

type rawGateway struct {
	Addr            string      `mapstructure:"addr"`
	Credentials     []rawAPIKey `mapstructure:"credentials"`
	AcceptAppSecret bool        `mapstructure:"accept_app_secret"`
	MaxBody         int64       `mapstructure:"max_body"`
	RetryBuffer     int64       `mapstructure:"retry_buffer"`
	Timeout         string      `mapstructure:"timeout"`
	MaxConcurrent   int         `mapstructure:"max_concurrent"`
	AccessLog       bool        `mapstructure:"access_log"`
}
