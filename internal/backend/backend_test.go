package backend_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/backend"
	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/internal/tktest/fleet"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

func load(t *testing.T, yaml string) *config.Config {
	t.Helper()
	cfg, err := config.Load(config.Options{File: "(test)", YAML: []byte(yaml), Environ: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestOpenServesTokensFromTheConfiguredUpstream(t *testing.T) {
	r := fleet.NewRefresher(t, []wechattest.Option{wechattest.WithApp("wx1", "backend-test-secret-1")}, `
apps: [{id: wx1, secret: backend-test-secret-1}]
cache: {key_prefix: "bt:"}
`)
	mr, fake, cfg := r.Mini, r.Fake, r.Config
	cache, client, err := backend.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	defer cache.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tok, err := cache.Token(ctx, "wx1")
	if err != nil {
		t.Fatal(err)
	}
	if tok.Value != fake.CurrentToken("wx1") {
		t.Errorf("token is not the fake's current one")
	}
	if !mr.Exists("bt:{wx1}:token") {
		t.Errorf("no record under the configured key prefix; keys %v", mr.Keys())
	}
}

func TestConfigErrorsAreErrConfig(t *testing.T) {
	cfg := load(t, `apps: [{id: wx0123456789abcdef, secret: backend-test-secret-2}]`)
	cfg.Cache.KeyPrefix = "{bad}" // config validation bypassed: tokencache refuses it
	_, _, err := backend.Open(cfg)
	if !errors.Is(err, backend.ErrConfig) || !strings.HasPrefix(err.Error(), "configuration: ") || !strings.Contains(err.Error(), "KeyPrefix") {
		t.Fatalf("err %v: want ErrConfig naming the key prefix", err)
	}
	if strings.Contains(err.Error(), "backend-test-secret-2") {
		t.Fatal("error shows the secret")
	}
}
