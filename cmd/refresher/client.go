package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/backend"
	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/internal/status"
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
	cache, client, err := backend.Open(cfg)
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
	cache, client, err := backend.Open(cfg)
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
	return status.Print(ctx, cfg, stdout)
}
