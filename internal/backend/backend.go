package backend

import (
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// ErrConfig wraps every error that comes from a configuration the
// libraries refuse although internal/config accepted it. Its text,
// "configuration", prefixes the cause.
var ErrConfig = errors.New("configuration")

// Configf wraps err as a configuration error.
func Configf(err error) error { return fmt.Errorf("%w: %w", ErrConfig, err) }

// NewClient returns the Redis client cfg describes. It connects lazily:
// no command is sent yet.
func NewClient(cfg *config.Config) redis.UniversalClient {
	return redis.NewUniversalClient(cfg.RedisOptions())
}

// NewCache builds the token cache over client with cfg's options followed
// by extra (a replica adds its logger and hooks).
func NewCache(cfg *config.Config, client redis.UniversalClient, extra ...tokencache.Option) (*tokencache.Cache, error) {
	src, err := wechat.NewSource(wechat.NewClient(cfg.WeChatClientOptions()...), cfg.WeChatApps()...)
	if err != nil {
		return nil, Configf(err)
	}
	cache, err := tokencache.New(client, src, append(cfg.CacheOptions(), extra...)...)
	if err != nil {
		return nil, Configf(err)
	}
	return cache, nil
}

// Open is NewClient and NewCache for a one-shot command, with the fetch
// locks on the lock masters if cfg has them (LocksOf(client) returns them;
// closing the client closes them too). The caller closes the cache, then
// the client; on error nothing is left open.
func Open(cfg *config.Config) (*tokencache.Cache, redis.UniversalClient, error) {
	client := NewClient(cfg)
	if len(cfg.Redis.LockAddrs) > 0 {
		client = clientWithLocks{client, NewLocks(cfg)}
	}
	cache, err := NewCache(cfg, client, LocksOf(client).CacheOptions()...)
	if err != nil {
		client.Close()
		return nil, nil, err
	}
	return cache, client, nil
}

// NewTickets builds the ticket caches over client, fetching getticket
// through cfg's WeChat client with the access tokens of tokens, with
// cfg's cache options followed by extra.
func NewTickets(cfg *config.Config, client redis.UniversalClient, tokens tokencache.AccessTokens, extra ...tokencache.Option) (*tokencache.Tickets, error) {
	t, err := tokencache.NewTickets(client, tokens, wechat.NewClient(cfg.WeChatClientOptions()...), append(cfg.CacheOptions(), extra...)...)
	if err != nil {
		return nil, Configf(err)
	}
	return t, nil
}
