package config

import (
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/pkg/lock"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// RedisOptions maps the redis section onto go-redis's universal options:
// one address is a standalone server, several a Cluster, and MasterName
// turns the addresses into Sentinels.
func (c *Config) RedisOptions() *redis.UniversalOptions {
	o := &redis.UniversalOptions{
		Addrs:      append([]string(nil), c.Redis.Addrs...),
		Username:   c.Redis.Username,
		Password:   c.Redis.Password.Reveal(),
		DB:         c.Redis.DB,
		MasterName: c.Redis.MasterName,
		// Fail fast when Redis is down: the cache then serves its near
		// copy. go-redis's defaults retry a refused dial five times with
		// backoff, about 1.7 s in which a reader would wait.
		DialerRetries: 1,
		DialTimeout:   time.Second,
		ReadTimeout:   time.Second,
		WriteTimeout:  time.Second,
	}
	if c.Redis.TLS {
		o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		// A standalone server's certificate is checked against its host;
		// Cluster nodes are named per node by go-redis.
		if len(c.Redis.Addrs) == 1 && c.Redis.MasterName == "" {
			if host, _, err := net.SplitHostPort(c.Redis.Addrs[0]); err == nil {
				o.TLSConfig.ServerName = host
			}
		}
	}
	return o
}

// WeChatApps returns the apps that have a secret as the wechat package
// wants them. Every app has one, except in a configuration loaded
// ReadOnly: an app without one is not the Source's, and fetching it fails
// as an unknown app.
func (c *Config) WeChatApps() []wechat.App {
	apps := make([]wechat.App, 0, len(c.Apps))
	for _, a := range c.Apps {
		if a.Secret != "" {
			apps = append(apps, wechat.App{ID: a.ID, Secret: a.Secret, Mode: a.Mode})
		}
	}
	return apps
}

// WeChatClientOptions points a wechat.Client at the configured base URL
// with the configured timeout.
func (c *Config) WeChatClientOptions() []wechat.Option {
	return []wechat.Option{
		wechat.WithBaseURL(c.WeChat.BaseURL),
		wechat.WithHTTPClient(&http.Client{Timeout: c.WeChat.Timeout}),
	}
}

// CacheOptions maps the cache section and the apps' modes onto tokencache
// options. The caller adds its logger and hooks.
func (c *Config) CacheOptions() []tokencache.Option {
	opts := []tokencache.Option{tokencache.WithConfig(c.Cache)}
	for _, a := range c.Apps {
		opts = append(opts, tokencache.WithMode(a.ID, a.Mode))
	}
	return opts
}

// ElectorConfig maps the lease section onto the elector's configuration.
func (c *Config) ElectorConfig(client redis.UniversalClient, cb lock.LeaderCallbacks, log *slog.Logger) lock.ElectorConfig {
	return lock.ElectorConfig{
		Client:        client,
		Name:          c.Lease.Name,
		Identity:      c.Identity,
		LeaseDuration: c.Lease.Duration,
		RenewDeadline: c.Lease.RenewDeadline,
		RetryPeriod:   c.Lease.RetryPeriod,
		Callbacks:     cb,
		Logger:        log,
	}
}

// LastFetchKey is the Redis key where the refresher records an app's last
// fetch result for `refresher status`. It shares the app's hash tag.
func (c *Config) LastFetchKey(appID string) string {
	return c.Cache.KeyPrefix + "{" + appID + "}:last_fetch"
}
