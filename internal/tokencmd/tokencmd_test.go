package tokencmd_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/backend"
	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/internal/tktest/fleet"
	"github.com/tokenkeeper/tokenkeeper/internal/tokencmd"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

func TestWrite(t *testing.T) {
	now := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	tok := tokencache.Token{Value: "TOK", Version: 4, UsableUntil: now.Add(100*time.Second + 900*time.Millisecond)}
	var b bytes.Buffer
	if err := tokencmd.Write(&b, tok, now); err != nil {
		t.Fatal(err)
	}
	want := "{\n  \"access_token\": \"TOK\",\n  \"expires_in\": 100,\n  \"expires_at\": \"2026-05-06T07:09:49Z\",\n  \"version\": 4\n}\n"
	if b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
	if r := tokencmd.NewReply(tok, now.Add(time.Hour)); r.ExpiresIn != 0 {
		t.Errorf("an expired token's expires_in is %d, want 0", r.ExpiresIn)
	}
}

func setup(t *testing.T, secret string) (*config.Config, *wechattest.Server) {
	t.Helper()
	r := fleet.NewRefresher(t, []wechattest.Option{wechattest.WithApp("wx1", "tokencmd-secret-right"), wechattest.WithLifetime(time.Hour)}, `
wechat: {timeout: 2s}
apps: [{id: wx1, secret: `+secret+`}]
cache: {lock_ttl: 2s, fetch_timeout: 1s}
`)
	return r.Config, r.Fake
}

func decode(t *testing.T, b *bytes.Buffer) tokencmd.Reply {
	t.Helper()
	var r tokencmd.Reply
	if err := json.Unmarshal(b.Bytes(), &r); err != nil {
		t.Fatalf("output %q: %v", b.String(), err)
	}
	b.Reset()
	return r
}

func TestTokenAndInvalidate(t *testing.T) {
	cfg, fake := setup(t, "tokencmd-secret-right")
	ctx := context.Background()
	var out bytes.Buffer
	if err := tokencmd.Token(ctx, cfg, "wx1", &out); err != nil {
		t.Fatal(err)
	}
	first := decode(t, &out)
	if first.AccessToken != fake.CurrentToken("wx1") || first.Version != 1 || first.ExpiresIn < 3000 {
		t.Fatalf("token %+v", first)
	}
	// A second process reads the stored token: no new fetch.
	if err := tokencmd.Token(ctx, cfg, "wx1", &out); err != nil || decode(t, &out).AccessToken != first.AccessToken {
		t.Fatalf("second token: %v", err)
	}
	if n := fake.Stats("wx1").Minted; n != 1 {
		t.Errorf("%d tokens minted for two reads, want 1", n)
	}
	// Reporting the current token replaces it once WeChat refuses it;
	// reporting it again does not.
	fake.Revoke("wx1", first.AccessToken)
	if err := tokencmd.Invalidate(ctx, cfg, "wx1", first.AccessToken, &out); err != nil {
		t.Fatal(err)
	}
	second := decode(t, &out)
	if second.AccessToken == first.AccessToken || second.Version != 2 {
		t.Fatalf("after invalidate %+v", second)
	}
	if err := tokencmd.Invalidate(ctx, cfg, "wx1", first.AccessToken, &out); err != nil || decode(t, &out).AccessToken != second.AccessToken {
		t.Fatalf("stale invalidate: %v", err)
	}
	if n := fake.Stats("wx1").Minted; n != 2 {
		t.Errorf("%d tokens minted, want 2", n)
	}
}

func TestErrorsNameTheAppNotTheSecretOrToken(t *testing.T) {
	cfg, _ := setup(t, "tokencmd-secret-WRONG")
	var out bytes.Buffer
	err := tokencmd.Token(context.Background(), cfg, "wx1", &out)
	if !errors.Is(err, wechat.ErrConfig) || !strings.HasPrefix(err.Error(), "token for wx1: ") || strings.Contains(err.Error(), "tokencmd-secret") {
		t.Errorf("wrong secret: %v", err)
	}
	const bad = "SOME-ACCESS-TOKEN-VALUE-0123456789"
	err = tokencmd.Invalidate(context.Background(), cfg, "wx1", bad, &out)
	if err == nil || !strings.HasPrefix(err.Error(), "invalidate wx1 token "+wechat.Fingerprint(bad)+": ") || strings.Contains(err.Error(), bad) || strings.Contains(err.Error(), "tokencmd-secret") {
		t.Errorf("invalidate with a wrong secret: %v", err)
	}
	if out.Len() != 0 {
		t.Errorf("printed %q on error", out.String())
	}

	cfg.Cache.KeyPrefix = "{" // bypasses config validation; tokencache refuses it
	if err := tokencmd.Token(context.Background(), cfg, "wx1", &out); !errors.Is(err, backend.ErrConfig) {
		t.Errorf("bad key prefix: %v, want backend.ErrConfig", err)
	}
}
