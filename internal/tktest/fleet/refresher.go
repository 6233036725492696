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
	cfg, err := config.Load(config.Options{File: "(test)", YAML: []byte(yaml), Environ: []string{
		config.EnvName("redis.addrs") + "=" + r.Mini.Addr(),
		config.EnvName("wechat.base_url") + "=" + r.Fake.URL(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	r.Config = cfg
	return r
}
