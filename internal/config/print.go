package config

import (
	"fmt"
	"io"
	"time"

	"go.yaml.in/yaml/v3"
)

// Redacted stands where a secret would be printed.
const Redacted = "[redacted]"

// printed mirrors the file's shape with every secret replaced by where it
// came from. Only strings built here reach the output, never a Secret's
// value.
type printed struct {
	Identity  string           `yaml:"identity"`
	File      string           `yaml:"config_file,omitempty"`
	Redis     printedRedis     `yaml:"redis"`
	WeChat    printedWeChat    `yaml:"wechat"`
	Apps      []printedApp     `yaml:"apps"`
	Cache     printedCache     `yaml:"cache"`
	Lease     printedLease     `yaml:"lease"`
	HTTP      printedHTTP      `yaml:"http"`
	Metrics   printedMetrics   `yaml:"metrics"`
	Log       printedLog       `yaml:"log"`
	Gateway   printedGateway   `yaml:"gateway"`
	Scheduler printedScheduler `yaml:"scheduler"`
	Unused    []string         `yaml:"unused_env,omitempty"`
}

type printedRedis struct {
	Addrs      []string `yaml:"addrs"`
	Username   string   `yaml:"username,omitempty"`
	Password   string   `yaml:"password,omitempty"`
	DB         int      `yaml:"db"`
	TLS        bool     `yaml:"tls"`
	MasterName string   `yaml:"master_name,omitempty"`

	TLSCAFile     string   `yaml:"tls_ca_file,omitempty"`
	TLSCertFile   string   `yaml:"tls_cert_file,omitempty"`
	TLSKeyFile    string   `yaml:"tls_key_file,omitempty"`
	TLSServerName string   `yaml:"tls_server_name,omitempty"`
	LockAddrs     []string `yaml:"lock_addrs,omitempty"`
}

type printedWeChat struct {
	BaseURL string `yaml:"base_url"`
	Timeout string `yaml:"timeout"`
}

type printedApp struct {
	ID      string   `yaml:"id"`
	Mode    string   `yaml:"mode"`
	Secret  string   `yaml:"secret"`
	Tickets []string `yaml:"tickets,omitempty"`
}

type printedCache struct {
	KeyPrefix    string `yaml:"key_prefix"`
	RefreshAhead string `yaml:"refresh_ahead"`
	Margin       string `yaml:"margin"`
	Overlap      string `yaml:"overlap"`
	LockTTL      string `yaml:"lock_ttl"`
	FetchTimeout string `yaml:"fetch_timeout"`
	NearMaxAge   string `yaml:"near_max_age"`
	DailyBudget  int    `yaml:"daily_budget"`
	ConfigHold   string `yaml:"config_hold"`
}

type printedLease struct {
	Name          string `yaml:"name"`
	Duration      string `yaml:"duration"`
	RenewDeadline string `yaml:"renew_deadline"`
	RetryPeriod   string `yaml:"retry_period"`
}

type printedHTTP struct {
	Addr                 string          `yaml:"addr"`
	APIKeys              []printedAPIKey `yaml:"api_keys"`
	InvalidateRate       float64         `yaml:"invalidate_rate"`
	AllowUnauthenticated bool            `yaml:"allow_unauthenticated"`
	TLS                  *printedTLS     `yaml:"tls,omitempty"`
}

type printedTLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

type printedMetrics struct {
	Addr   string `yaml:"addr"`
	PerApp string `yaml:"per_app"`
}

type printedAPIKey struct {
	Name  string   `yaml:"name"`
	Key   string   `yaml:"key"`
	Apps  []string `yaml:"apps"`
	Admin bool     `yaml:"admin,omitempty"`
}

type printedGateway struct {
	Addr            string          `yaml:"addr"`
	Credentials     []printedAPIKey `yaml:"credentials"`
	AcceptAppSecret bool            `yaml:"accept_app_secret"`
	MaxBody         int64           `yaml:"max_body"`
	RetryBuffer     int64           `yaml:"retry_buffer"`
	Timeout         string          `yaml:"timeout"`
	MaxConcurrent   int             `yaml:"max_concurrent"`
	AccessLog       bool            `yaml:"access_log"`
}

type printedScheduler struct {
	MaxConcurrent int `yaml:"max_concurrent"`
}

type printedLog struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

func redactedFrom(from string) string {
	if from == "" {
		return ""
	}
	return Redacted + " (" + from + ")"
}

// Print writes the effective configuration as YAML with every secret,
// password and API key replaced by "[redacted] (<where it came from>)".
func (c *Config) Print(w io.Writer) error {
	ds := func(d time.Duration) string { return d.String() }
	p := printed{
		Identity: c.Identity,
		File:     c.File,
		Redis: printedRedis{
			Addrs: c.Redis.Addrs, Username: c.Redis.Username, Password: redactedFrom(c.Redis.PasswordFrom),
			DB: c.Redis.DB, TLS: c.Redis.TLS, MasterName: c.Redis.MasterName,
			TLSCAFile: c.Redis.TLSCAFile, TLSCertFile: c.Redis.TLSCertFile, TLSKeyFile: c.Redis.TLSKeyFile,
			TLSServerName: c.Redis.TLSServerName, LockAddrs: c.Redis.LockAddrs,
		},
		WeChat: printedWeChat{BaseURL: c.WeChat.BaseURL, Timeout: ds(c.WeChat.Timeout)},
		Cache: printedCache{
			KeyPrefix: c.Cache.KeyPrefix, RefreshAhead: ds(c.Cache.RefreshAhead), Margin: ds(c.Cache.Margin),
			Overlap: ds(c.Cache.Overlap), LockTTL: ds(c.Cache.LockTTL), FetchTimeout: ds(c.Cache.FetchTimeout),
			NearMaxAge: ds(c.Cache.NearMaxAge), DailyBudget: c.Cache.DailyBudget, ConfigHold: ds(c.Cache.ConfigHold),
		},
		Lease: printedLease{
			Name: c.Lease.Name, Duration: ds(c.Lease.Duration),
			RenewDeadline: ds(c.Lease.RenewDeadline), RetryPeriod: ds(c.Lease.RetryPeriod),
		},
		HTTP:      printedHTTP{Addr: c.HTTP.Addr, InvalidateRate: c.HTTP.InvalidateRate, AllowUnauthenticated: c.HTTP.AllowUnauthenticated},
		Metrics:   printedMetrics{Addr: c.Metrics.Addr, PerApp: c.Metrics.PerApp},
		Scheduler: printedScheduler{MaxConcurrent: c.Scheduler.MaxConcurrent},
		Log:       printedLog{Level: levelName(c), Format: c.Log.Format},
		Unused:    c.UnusedEnv,
	}
	if c.Redis.Password != "" && p.Redis.Password == "" {
		p.Redis.Password = Redacted
	}
	for _, a := range c.Apps {
		s := redactedFrom(a.SecretFrom)
		if s == "" {
			s = Redacted
		}
		p.Apps = append(p.Apps, printedApp{ID: a.ID, Mode: a.Mode.String(), Secret: s, Tickets: a.Tickets})
	}
	if c.HTTP.TLS.Enabled() {
		p.HTTP.TLS = &printedTLS{CertFile: c.HTTP.TLS.CertFile, KeyFile: c.HTTP.TLS.KeyFile}
	}
	p.HTTP.APIKeys = printedKeys(c.HTTP.APIKeys)
	g := c.Gateway
	p.Gateway = printedGateway{Addr: g.Addr, Credentials: printedKeys(g.Credentials), AcceptAppSecret: g.AcceptAppSecret,
		MaxBody: g.MaxBody, RetryBuffer: g.RetryBuffer, Timeout: ds(g.Timeout), MaxConcurrent: g.MaxConcurrent, AccessLog: g.AccessLog}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(p); err != nil {
		return fmt.Errorf("config: print: %w", err)
	}
	return enc.Close()
}

// printedKeys shows keys by name, apps and where the key came from.
func printedKeys(keys []APIKey) []printedAPIKey {
	var out []printedAPIKey
	for _, k := range keys {
		s := redactedFrom(k.KeyFrom)
		if s == "" {
			s = Redacted
		}
		out = append(out, printedAPIKey{Name: k.Name, Key: s, Apps: k.Apps, Admin: k.Admin})
	}
	return out
}

func levelName(c *Config) string {
	switch s := c.Log.Level.String(); s {
	case "DEBUG", "INFO", "WARN", "ERROR":
		return map[string]string{"DEBUG": "debug", "INFO": "info", "WARN": "warn", "ERROR": "error"}[s]
	default:
		return s
	}
}
