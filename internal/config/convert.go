package config

import (
	"log/slog"
	"net/http"
	"runtime"
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
		PoolSize:      c.redisPoolSize(),
	}
	// A standalone server's certificate is checked against its host
	// (or tls_server_name); Cluster nodes are named per node by go-redis.
	if c.Redis.MasterName == "" {
		o.TLSConfig = c.Redis.tlsFor(c.Redis.Addrs)
	} else {
		o.TLSConfig = c.Redis.tlsFor(nil)
	}
	return o
}

// redisPoolSize is go-redis's default pool (10 per CPU) or, when larger,
// one connection per refresh the scheduler may have under way plus a few
// for the elector, the status writer and readers: a refresh takes a
// connection for its lock and its write, and with fewer in the pool a
// cold start of many apps would queue on the pool (and time out after
// PoolTimeout) instead of on the upstream.
func (c *Config) redisPoolSize() int {
	return max(10*runtime.GOMAXPROCS(0), c.Scheduler.MaxConcurrent+redisPoolHeadroom)
}

// redisPoolHeadroom is the connections beyond the scheduler's refreshes.
const redisPoolHeadroom = 16

// LockOptions are the client options of each independent lock master
// (redis.lock_addrs), nil if there are none. They share the credentials
// and TLS settings of the redis section.
func (c *Config) LockOptions() []*redis.Options {
	var opts []*redis.Options
	for _, a := range c.Redis.LockAddrs {
		u := c.RedisOptions()
		opts = append(opts, &redis.Options{
			Addr: a, Username: u.Username, Password: u.Password, DB: c.Redis.DB,
			TLSConfig:     c.Redis.tlsFor([]string{a}),
			DialerRetries: u.DialerRetries, DialTimeout: u.DialTimeout, ReadTimeout: u.ReadTimeout, WriteTimeout: u.WriteTimeout, PoolSize: u.PoolSize,
		})
	}
	return opts
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

// TicketApps maps each ticket kind to the apps that keep it warm, in
// configuration order; a kind no app lists is absent.
func (c *Config) TicketApps() map[string][]string {
	out := map[string][]string{}
	for _, a := range c.Apps {
		for _, kind := range a.Tickets {
			out[kind] = append(out[kind], a.ID)
		}
	}
	return out
}

// AppTickets maps each app that keeps tickets to its kinds.
func (c *Config) AppTickets() map[string][]string {
	out := map[string][]string{}
	for _, a := range c.Apps {
		if len(a.Tickets) > 0 {
			out[a.ID] = append([]string(nil), a.Tickets...)
		}
	}
	return out
}
