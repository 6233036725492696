package fleet

import (
	"testing"

	"github.com/alicebob/miniredis/v2"

	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

// Refresher is the refresher's world in one process: a miniredis, a fake
// WeChat, and a refresher configuration pointed at both.
type Refresher struct {
	Mini   *miniredis.Miniredis
	Fake   *wechattest.Server
	Config *config.Config
}

// NewRefresher starts a miniredis and the fake (with fakeOpts: its apps
// and secrets) and loads yaml, the configuration but for the Redis address
// and the WeChat base URL, which come from the environment, as a deployment
// would set them (config.EnvName).
func NewRefresher(t testing.TB, fakeOpts []wechattest.Option, yaml string) *Refresher {
	t.Helper()
	r := &Refresher{Mini: miniredis.RunT(t), Fake: wechattest.New(t, fakeOpts...)}
	r.Config = LoadConfig(t, yaml, r.Mini.Addr(), r.Fake.URL())
	return r
}

// LoadConfig loads yaml, a refresher configuration but for the Redis
// address and the WeChat base URL, which it sets through the environment.
func LoadConfig(t testing.TB, yaml, redisAddr, wechatURL string) *config.Config {
	t.Helper()
	cfg, err := config.Load(config.Options{File: "(test)", YAML: []byte(yaml), Environ: []string{
		config.EnvName("redis.addrs") + "=" + redisAddr,
		config.EnvName("wechat.base_url") + "=" + wechatURL,
	}})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}
