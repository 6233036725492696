package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/pkg/lock"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// The token, invalidate and status subcommands talk to Redis directly with
// the same configuration as the replicas: they need no running replica.

// tokenJSON is the same shape as the HTTP API's answer.
type tokenJSON struct {
	AccessToken string `json:"access_token"`
	ExpiresIn   int    `json:"expires_in"`
	ExpiresAt   string `json:"expires_at"`
	Version     int64  `json:"version"`
}

func openCache(cfg *config.Config) (*tokencache.Cache, redis.UniversalClient, error) {
	client := redis.NewUniversalClient(cfg.RedisOptions())
	src, err := wechat.NewSource(wechat.NewClient(cfg.WeChatClientOptions()...), cfg.WeChatApps()...)
	if err != nil {
		client.Close()
		return nil, nil, fmt.Errorf("%w: %w", errConfigLoad, err)
	}
	cache, err := tokencache.New(client, src, cfg.CacheOptions()...)
	if err != nil {
		client.Close()
		return nil, nil, fmt.Errorf("%w: %w", errConfigLoad, err)
	}
	return cache, client, nil
}

func checkApp(cfg *config.Config, app string) error {
	if !slices.Contains(cfg.AppIDs(), app) {
		return usagef("unknown app %q: configured apps are %s", app, strings.Join(cfg.AppIDs(), ", "))
	}
	return nil
}

func printToken(w io.Writer, tok tokencache.Token) error {
	now := time.Now()
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(tokenJSON{
		AccessToken: tok.Value,
		ExpiresIn:   int(tok.ExpiresIn(now) / time.Second),
		ExpiresAt:   tok.UsableUntil.UTC().Format(time.RFC3339),
		Version:     tok.Version,
	})
}

// callTimeout covers a wait for one fetch by this or another process.
func callTimeout(cfg *config.Config) time.Duration {
	return cfg.Cache.LockTTL + cfg.Cache.FetchTimeout + 5*time.Second
}

func cmdToken(ctx context.Context, cfg *config.Config, app string, stdout io.Writer) error {
	if err := checkApp(cfg, app); err != nil {
		return err
	}
	cache, client, err := openCache(cfg)
	if err != nil {
		return err
	}
	defer client.Close()
	defer cache.Close()
	ctx, cancel := context.WithTimeout(ctx, callTimeout(cfg))
	defer cancel()
	tok, err := cache.Token(ctx, app)
	if err != nil {
		return fmt.Errorf("token for %s: %w", app, err)
	}
	return printToken(stdout, tok)
}

func cmdInvalidate(ctx context.Context, cfg *config.Config, app, bad string, stdout io.Writer) error {
	if err := checkApp(cfg, app); err != nil {
		return err
	}
	if strings.TrimSpace(bad) == "" {
		return usagef("invalidate: empty token")
	}
	cache, client, err := openCache(cfg)
	if err != nil {
		return err
	}
	defer client.Close()
	defer cache.Close()
	ctx, cancel := context.WithTimeout(ctx, callTimeout(cfg))
	defer cancel()
	tok, err := cache.Invalidate(ctx, app, bad)
	if err != nil {
		return fmt.Errorf("invalidate %s token %s: %w", app, wechat.Fingerprint(bad), err)
	}
	return printToken(stdout, tok)
}

func cmdStatus(ctx context.Context, cfg *config.Config, stdout io.Writer) error {
	cache, client, err := openCache(cfg)
	if err != nil {
		return err
	}
	defer client.Close()
	defer cache.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()

	if err := client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis %s unreachable: %w", strings.Join(cfg.Redis.Addrs, ","), err)
	}
	// An elector that never runs only reads the lease.
	probe, err := lock.NewElector(cfg.ElectorConfig(client, lock.LeaderCallbacks{}, nil))
	if err != nil {
		return err
	}
	leader, err := probe.Leader(ctx)
	if err != nil {
		return err
	}
	if leader == "" {
		leader = "(none: no replica holds the lease)"
	}
	fmt.Fprintf(stdout, "leader: %s\n\n", leader)

	now := time.Now()
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "APP\tMODE\tTOKEN\tVERSION\tUSABLE FOR\tLAST FETCH\tFETCHES TODAY")
	for _, app := range cfg.Apps {
		token, version, usable := "-", "-", "-"
		tok, found, err := cache.Peek(ctx, app.ID)
		switch {
		case err != nil:
			token = "error: " + err.Error()
		case found:
			token = wechat.Fingerprint(tok.Value)
			version = fmt.Sprint(tok.Version)
			usable = tok.ExpiresIn(now).Truncate(time.Second).String()
		}
		last := "-"
		data, err := client.Get(ctx, cfg.LastFetchKey(app.ID)).Bytes()
		switch {
		case errors.Is(err, redis.Nil):
		case err != nil:
			last = "error: " + err.Error()
		default:
			var rec lastFetchRecord
			if json.Unmarshal(data, &rec) == nil {
				last = fmt.Sprintf("%s %s ago by %s", rec.Result, now.Sub(rec.At).Truncate(time.Second), rec.By)
				if rec.Error != "" {
					last += ": " + rec.Error
				}
			}
		}
		fetches := "-"
		if n, err := cache.FetchesToday(ctx, app.ID); err == nil {
			fetches = fmt.Sprint(n)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", app.ID, app.Mode, token, version, usable, last, fetches)
	}
	return tw.Flush()
}
