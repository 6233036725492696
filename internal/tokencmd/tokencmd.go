package tokencmd

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/backend"
	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// Reply is the printed token, the same shape as the HTTP API's answer.
type Reply struct {
	AccessToken string `json:"access_token"`
	// ExpiresIn is the usable life left, in whole seconds.
	ExpiresIn int    `json:"expires_in"`
	ExpiresAt string `json:"expires_at"` // RFC 3339, UTC
	Version   int64  `json:"version"`
}

// NewReply describes tok as of now.
func NewReply(tok tokencache.Token, now time.Time) Reply {
	return Reply{
		AccessToken: tok.Value,
		ExpiresIn:   int(tok.ExpiresIn(now) / time.Second),
		ExpiresAt:   tok.UsableUntil.UTC().Format(time.RFC3339),
		Version:     tok.Version,
	}
}

// Write prints tok as indented JSON.
func Write(w io.Writer, tok tokencache.Token, now time.Time) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(NewReply(tok, now))
}

// Timeout bounds one command: a wait for one fetch, by this or another
// process, plus Redis round trips.
func Timeout(cfg *config.Config) time.Duration {
	return cfg.Cache.LockTTL + cfg.Cache.FetchTimeout + 5*time.Second
}

// Token prints app's current token, fetching one if none is usable. The
// caller has checked that cfg lists app.
func Token(ctx context.Context, cfg *config.Config, app string, w io.Writer) error {
	return withCache(ctx, cfg, w, func(ctx context.Context, cache *tokencache.Cache) (tokencache.Token, error) {
		tok, err := cache.Token(ctx, app)
		if err != nil {
			return tok, fmt.Errorf("token for %s: %w", app, err)
		}
		return tok, nil
	})
}

// Invalidate reports bad as refused by WeChat and prints the current
// token: a new one if bad was current, else the one that replaced it.
// Errors name bad by its fingerprint only.
func Invalidate(ctx context.Context, cfg *config.Config, app, bad string, w io.Writer) error {
	return withCache(ctx, cfg, w, func(ctx context.Context, cache *tokencache.Cache) (tokencache.Token, error) {
		tok, err := cache.Invalidate(ctx, app, bad)
		if err != nil {
			return tok, fmt.Errorf("invalidate %s token %s: %w", app, wechat.Fingerprint(bad), err)
		}
		return tok, nil
	})
}

func withCache(ctx context.Context, cfg *config.Config, w io.Writer, do func(context.Context, *tokencache.Cache) (tokencache.Token, error)) error {
	cache, client, err := backend.Open(cfg)
	if err != nil {
		return err
	}
	defer client.Close()
	defer cache.Close()
	ctx, cancel := context.WithTimeout(ctx, Timeout(cfg))
	defer cancel()
	tok, err := do(ctx, cache)
	if err != nil {
		return err
	}
	return Write(w, tok, time.Now())
}
