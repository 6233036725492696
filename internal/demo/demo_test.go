package demo_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/pflag"

	"github.com/tokenkeeper/tokenkeeper/internal/backend"
	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/internal/demo"
)

// TestStartServesBothApps: the demo's configuration reaches its own Redis
// and fake, with secrets the fake accepts, for both modes; flags apply.
func TestStartServesBothApps(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	config.RegisterFlags(fs)
	if err := fs.Parse([]string{"--http-addr", "127.0.0.1:9999"}); err != nil {
		t.Fatal(err)
	}
	e, err := demo.Start(fs)
	if err != nil {
		t.Fatal(err)
	}
	cfg := e.Config
	if cfg.HTTP.Addr != "127.0.0.1:9999" || cfg.Identity != "demo" || len(cfg.HTTP.APIKeys) != 1 || cfg.HTTP.APIKeys[0].Key.Reveal() != e.APIKey {
		t.Errorf("config: addr %s identity %s keys %d", cfg.HTTP.Addr, cfg.Identity, len(cfg.HTTP.APIKeys))
	}
	if cfg.Gateway.Addr != "127.0.0.1:8090" || len(cfg.Gateway.Credentials) != 1 || cfg.Gateway.Credentials[0].Key.Reveal() != e.GatewayCredential ||
		!strings.HasPrefix(e.GatewayCredential, "sdk-") || e.GatewayCredential == e.APIKey {
		t.Errorf("gateway: addr %s, %d credentials; want the demo's own credential on 127.0.0.1:8090", cfg.Gateway.Addr, len(cfg.Gateway.Credentials))
	}
	if !strings.HasPrefix(e.APIKey, "demo-") || len(e.APIKey) != len("demo-")+32 {
		t.Errorf("API key %q: want demo- and 32 hex digits", e.APIKey)
	}
	cache, client, err := backend.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, app := range []string{"wxdemo1", "wxdemo2"} {
		tok, err := cache.Token(ctx, app)
		if err != nil {
			t.Fatalf("%s: %v", app, err)
		}
		if life := tok.ExpiresIn(time.Now()); life < 40*time.Second || life > demo.Lifetime {
			t.Errorf("%s: usable for %v, want under a minute", app, life)
		}
	}
	cache.Close()
	client.Close()

	e.Close()
	after := redis.NewClient(&redis.Options{Addr: e.RedisAddr, MaxRetries: -1, DialTimeout: time.Second})
	defer after.Close()
	if err := after.Ping(ctx).Err(); err == nil {
		t.Error("the embedded Redis still answers after Close")
	}
}

func TestTwoDemosHaveDifferentSecrets(t *testing.T) {
	a, err := demo.Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := demo.Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if a.APIKey == b.APIKey || a.Config.Apps[0].Secret.Reveal() == b.Config.Apps[0].Secret.Reveal() || a.RedisAddr == b.RedisAddr {
		t.Error("two demos share a key, a secret or a Redis")
	}
}

func TestWriteHelp(t *testing.T) {
	e := &demo.Env{APIKey: "demo-KEY", GatewayCredential: "sdk-CRED", RedisAddr: "127.0.0.1:7777"}
	for addr, base := range map[string]string{
		"0.0.0.0:8080":   "http://127.0.0.1:8080",
		"[::]:8080":      "http://127.0.0.1:8080",
		"127.0.0.2:81":   "http://127.0.0.2:81",
		"[::1]:8080":     "http://[::1]:8080",
		"localhost:8080": "http://127.0.0.1:8080",
	} {
		var b bytes.Buffer
		e.WriteHelp(&b, addr, "0.0.0.0:8090")
		out := b.String()
		for _, want := range []string{
			"API key: demo-KEY\n",
			"curl -s -H 'Authorization: Bearer demo-KEY' " + base + "/v1/apps/wxdemo1/token",
			base + "/v1/apps/wxdemo1/invalidate",
			"curl -s " + base + "/metrics",
			"TOKENKEEPER_REDIS_ADDRS=127.0.0.1:7777 ",
			"refresher status",
			"curl -s 'http://127.0.0.1:8090/cgi-bin/token?grant_type=client_credential&appid=wxdemo1&secret=sdk-CRED'",
			"curl -s 'http://127.0.0.1:8090/cgi-bin/get_api_domain_ip?access_token=",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: help lacks %q:\n%s", addr, want, out)
			}
		}
	}
}
