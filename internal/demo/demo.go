package demo

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/spf13/pflag"

	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

// Demo timings: the fake's tokens live 60 s with a 20 s overlap, so a
// newcomer sees a refresh within a minute. The cache is tuned to match
// (overlap 20s > margin 5s + near max age 2s): a token is usable for
// 55 s and refreshed 20 s before that, i.e. every ~35 s.
const (
	Lifetime = 60 * time.Second
	Grace    = 20 * time.Second
)

const configYAML = `
identity: demo
redis:
  addrs: [%q]
wechat:
  base_url: %q
  timeout: 5s
apps:
  - id: wxdemo1
    secret: %q
    mode: classic
    tickets: [jsapi, wx_card]
  - id: wxdemo2
    secret: %q
    mode: stable
cache:
  refresh_ahead: 20s
  margin: 5s
  overlap: 20s
  near_max_age: 2s
  lock_ttl: 5s
  fetch_timeout: 3s
lease:
  duration: 6s
  renew_deadline: 4s
  retry_period: 1s
http:
  addr: "127.0.0.1:8080"
  api_keys:
    - name: demo
      key: %q
      apps: ["*"]
gateway:
  addr: "127.0.0.1:8090"
  credentials:
    - name: demo-sdk
      key: %q
      apps: ["*"]
`

// Env is a running demo backend. Close it when the replica has stopped.
type Env struct {
	// Config points a replica at the embedded Redis and fake WeChat.
	// Flags given to Start apply (e.g. --http-addr); the environment does
	// not, so a stray TOKENKEEPER_ variable cannot break the demo.
	Config *config.Config
	// APIKey reads every app's token.
	APIKey string
	// GatewayCredential is what an SDK sends as its secret to the
	// WeChat-compatible gateway (Config.Gateway.Addr), for every app.
	GatewayCredential string

	RedisAddr string
	WeChatURL string

	redis *miniredis.Miniredis
	fake  *wechattest.Server
}

// Start starts the embedded Redis and fake WeChat and builds the
// configuration, with flags (may be nil) applied over it.
func Start(flags *pflag.FlagSet) (*Env, error) {
	mr := miniredis.NewMiniRedis()
	// Leases, locks and tokens expire by TTL; miniredis only honours TTLs
	// against the clock when told to.
	mr.ClockTTL(true)
	if err := mr.Start(); err != nil {
		return nil, fmt.Errorf("demo: start the embedded Redis: %w", err)
	}
	secret1, secret2 := randomHex(16), randomHex(16)
	fake := wechattest.NewServer(
		wechattest.WithApp("wxdemo1", secret1),
		wechattest.WithApp("wxdemo2", secret2),
		wechattest.WithLifetime(Lifetime),
		wechattest.WithGrace(Grace),
		wechattest.WithTicketLifetime(Lifetime),
	)
	e := &Env{APIKey: "demo-" + randomHex(16), GatewayCredential: "sdk-" + randomHex(16), RedisAddr: mr.Addr(), WeChatURL: fake.URL(), redis: mr, fake: fake}
	yaml := fmt.Sprintf(configYAML, mr.Addr(), fake.URL(), secret1, secret2, e.APIKey, e.GatewayCredential)
	cfg, err := config.Load(config.Options{File: "(demo)", YAML: []byte(yaml), Environ: []string{}, Flags: flags})
	if err != nil {
		e.Close()
		return nil, err
	}
	e.Config = cfg
	return e, nil
}

// Close stops the fake WeChat and the embedded Redis.
func (e *Env) Close() {
	e.fake.Close()
	e.redis.Close()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand panics instead)
	return hex.EncodeToString(b)
}

// WriteHelp prints what to try against a replica listening on addr (and
// its gateway on gatewayAddr): curl lines with the API key and the gateway
// credential, and how to run `refresher status`.
func (e *Env) WriteHelp(w io.Writer, addr, gatewayAddr string) {
	base, gw := baseURL(addr), baseURL(gatewayAddr)
	fmt.Fprintf(w, `
tokenkeeper demo is running: one replica, an embedded Redis, a fake WeChat
whose tokens live %v (a refresh every ~35 s; watch for "fetched and stored a new token").

API key: %s

Try:
  curl -s -H 'Authorization: Bearer %[2]s' %[3]s/v1/apps/wxdemo1/token
  curl -s -H 'Authorization: Bearer %[2]s' %[3]s/v1/apps/wxdemo2/token
  curl -s -X POST -H 'Authorization: Bearer %[2]s' -H 'Content-Type: application/json' \
       -d '{"access_token":"<the token that failed>"}' %[3]s/v1/apps/wxdemo1/invalidate
  curl -s -X POST -H 'Authorization: Bearer %[2]s' -H 'Content-Type: application/json' \
       -d '{"url":"https://m.example.com/page"}' %[3]s/v1/apps/wxdemo1/jssdk-config
  curl -s %[3]s/metrics | grep ^tokenkeeper_
  curl -s %[3]s/readyz

The WeChat-compatible gateway, as an SDK in any language sees it (its
"secret" is the gateway credential %[5]s, never the AppSecret):
  curl -s '%[6]s/cgi-bin/token?grant_type=client_credential&appid=wxdemo1&secret=%[5]s'
  curl -s '%[6]s/cgi-bin/get_api_domain_ip?access_token=<the access_token above>'

Status (leader, token fingerprints, last fetch), from another terminal; status
reads Redis only and never fetches, so the secrets it asks for are placeholders:
  TOKENKEEPER_REDIS_ADDRS=%[4]s TOKENKEEPER_APPS=wxdemo1:classic,wxdemo2:stable \
  TOKENKEEPER_APPS_WXDEMO1_SECRET=unused TOKENKEEPER_APPS_WXDEMO2_SECRET=unused \
  go run ./cmd/refresher status

Stop with Ctrl-C.
`, Lifetime, e.APIKey, base, e.RedisAddr, e.GatewayCredential, gw)
}

// baseURL is the http URL of a listener's address, on loopback when it
// listens on every address.
func baseURL(addr string) string {
	host, port, _ := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}
