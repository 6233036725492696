package wechat_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

func TestSourceRoutesByMode(t *testing.T) {
	clock := &fakeClock{now: t0}
	const classicApp, stableApp = "wx_classic", "wx_stable"
	fake := wechattest.New(t, wechattest.WithClock(clock.Now),
		wechattest.WithApp(classicApp, "classic-secret"), wechattest.WithApp(stableApp, "stable-secret"))
	src, err := wechat.NewSource(newClientFor(t, fake.URL(), clock),
		wechat.App{ID: classicApp, Secret: "classic-secret", Mode: wechat.Classic},
		wechat.App{ID: stableApp, Secret: "stable-secret", Mode: wechat.Stable})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	ct, err := src.Fetch(ctx, classicApp)
	if err != nil {
		t.Fatal(err)
	}
	if ct.Value != fake.CurrentToken(classicApp) || fake.CurrentStableToken(classicApp) != "" {
		t.Errorf("classic app did not get a classic token")
	}
	st1, err := src.Fetch(ctx, stableApp)
	if err != nil {
		t.Fatal(err)
	}
	st2, err := src.Fetch(ctx, stableApp)
	if err != nil {
		t.Fatal(err)
	}
	if st1.Value != fake.CurrentStableToken(stableApp) || fake.CurrentToken(stableApp) != "" {
		t.Errorf("stable app did not get a stable token")
	}
	// Never forced: a second fetch returns the same token and mints nothing.
	if st1.Value != st2.Value || fake.Stats(stableApp).Minted != 1 {
		t.Errorf("stable fetches minted %d tokens (same value: %v), want 1: Source must not force_refresh",
			fake.Stats(stableApp).Minted, st1.Value == st2.Value)
	}
	if src.Mode(classicApp) != wechat.Classic || src.Mode(stableApp) != wechat.Stable || src.Mode("nope") != wechat.Classic {
		t.Errorf("Mode: %v %v %v", src.Mode(classicApp), src.Mode(stableApp), src.Mode("nope"))
	}
	if !src.Has(stableApp) || src.Has("nope") {
		t.Errorf("Has is wrong")
	}
	if got := fmt.Sprint(src.AppIDs()); got != "[wx_classic wx_stable]" {
		t.Errorf("AppIDs = %s", got)
	}

	_, err = src.Fetch(ctx, "wx_unknown")
	var ce *wechat.ConfigError
	if !errors.As(err, &ce) || !errors.Is(err, wechat.ErrConfig) || errors.Is(err, wechat.ErrTransient) || !strings.Contains(err.Error(), `"wx_unknown"`) {
		t.Errorf("unknown app: err = %v, want a *ConfigError naming it", err)
	}
	if n := fake.Stats("").Minted; n != 2 {
		t.Errorf("fake minted %d tokens, want 2", n)
	}
	for _, f := range []string{"%v", "%+v", "%#v", "%d", "%s"} {
		for _, arg := range []any{src, *src} {
			if out := fmt.Sprintf(f, arg); strings.Contains(out, "secret") || !strings.Contains(out, "wx_stable:stable") {
				t.Errorf("Sprintf(%q, %T) = %q", f, arg, out)
			}
		}
	}
}

func TestNewSourceRejects(t *testing.T) {
	c := wechat.NewClient()
	const secret wechat.Secret = "do-not-print-me"
	ok := wechat.App{ID: "wx1", Secret: secret}
	for _, tc := range []struct {
		name   string
		client *wechat.Client
		apps   []wechat.App
		reason string
	}{
		{"nil client", nil, []wechat.App{ok}, "nil *Client"},
		{"empty appid", c, []wechat.App{ok, {Secret: secret}}, "app #1: empty appid"},
		{"appid with space", c, []wechat.App{{ID: "wx 1", Secret: secret}}, "app #0: appid contains whitespace"},
		{"appid with newline", c, []wechat.App{{ID: "wx1\n", Secret: secret}}, "whitespace"},
		{"empty secret", c, []wechat.App{{ID: "wx2"}}, `app "wx2": app #0: empty secret`},
		{"duplicate", c, []wechat.App{ok, {ID: "wx2", Secret: "x"}, ok}, `app "wx1": app #2: duplicate appid`},
		{"unknown mode", c, []wechat.App{{ID: "wx3", Secret: secret, Mode: 9}}, "unknown mode 9"},
	} {
		src, err := wechat.NewSource(tc.client, tc.apps...)
		if src != nil || !errors.Is(err, wechat.ErrConfig) || !strings.Contains(fmt.Sprint(err), tc.reason) {
			t.Errorf("%s: NewSource = %v, %v; want nil and an ErrConfig containing %q", tc.name, src, err, tc.reason)
		}
		if err != nil && strings.Contains(fmt.Sprintf("%v %+v %#v", err, err, err), secret.Reveal()) {
			t.Errorf("%s: error leaks the secret", tc.name)
		}
	}
	if src, err := wechat.NewSource(c); err != nil || len(src.AppIDs()) != 0 {
		t.Errorf("an empty Source should be valid: %v", err)
	}
}
