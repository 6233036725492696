package refresher_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/internal/refresher"
	"github.com/tokenkeeper/tokenkeeper/internal/testlog"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

const secret2 = "replica-test-secret2-0123456789"

// TestReloadUnderReadLoad: a replica serving readers takes an added app,
// refuses a bad configuration (nothing changes), and drops a removed app,
// and no read of the app that stays fails meanwhile.
func TestReloadUnderReadLoad(t *testing.T) {
	mr := miniredis.RunT(t)
	fake := wechattest.New(t, wechattest.WithApp("wx1", secret), wechattest.WithApp("wx2", secret2), wechattest.WithLifetime(time.Hour))
	yamlFor := func(apps string) string {
		return fmt.Sprintf(`
identity: rt1
redis: {addrs: [%q]}
wechat: {base_url: %q, timeout: 2s}
apps: [%s]
cache: {key_prefix: "rt:", lock_ttl: 2s, fetch_timeout: 1s}
lease: {name: "rt:leader", duration: 2s, renew_deadline: 1200ms, retry_period: 300ms}
http:
  addr: "127.0.0.1:0"
  api_keys: [{name: all, key: %q, apps: ["*"]}]
`, mr.Addr(), fake.URL(), apps, apiKey)
	}
	var current atomic.Value
	current.Store(yamlFor(fmt.Sprintf("{id: wx1, secret: %q}", secret)))
	load := func() (*config.Config, error) {
		return config.Load(config.Options{File: "(test)", Environ: []string{}, YAML: []byte(current.Load().(string))})
	}
	cfg, err := load()
	if err != nil {
		t.Fatal(err)
	}
	logs := &testlog.Buffer{}
	listening := make(chan string, 1)
	r, err := refresher.New(cfg, slog.New(slog.NewTextHandler(logs, nil)), refresher.WithReloader(load),
		refresher.WithOnListening(func(addr string) { listening <- addr }))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- r.Run(ctx) }()
	defer func() {
		cancel()
		<-ran
	}()
	base := "http://" + <-listening
	if code, body := get(t, base+"/v1/apps/wx1/token", apiKey); code != http.StatusOK {
		t.Fatalf("wx1 before any reload: %d %s", code, body)
	}

	// Readers of wx1, bounded in count; every answer must be a 200.
	var failed, reads atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 5 * time.Second}
	for range 4 {
		wg.Go(func() {
			for i := 0; i < 5000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest(http.MethodGet, base+"/v1/apps/wx1/token", nil)
				req.Header.Set("Authorization", "Bearer "+apiKey)
				resp, err := client.Do(req)
				reads.Add(1)
				if err != nil || resp.StatusCode != http.StatusOK {
					failed.Add(1)
				}
				if resp != nil {
					resp.Body.Close()
				}
			}
		})
	}

	// Added app: served after the reload.
	both := fmt.Sprintf("{id: wx1, secret: %q}, {id: wx2, secret: %q}", secret, secret2)
	current.Store(yamlFor(both))
	if err := r.Reload(ctx); err != nil {
		t.Fatalf("reload adding wx2: %v", err)
	}
	if code, body := get(t, base+"/v1/apps/wx2/token", apiKey); code != http.StatusOK || !strings.Contains(body, fake.CurrentToken("wx2")) {
		t.Fatalf("wx2 after the reload: %d %s", code, body)
	}

	// A bad configuration (an AppSecret where an appid goes) is refused
	// with config's message, and both apps stay served.
	current.Store(yamlFor(both + ", {id: '0123456789abcdef0123456789abcdef', secret: x}"))
	err = r.Reload(ctx)
	if err == nil || !strings.Contains(err.Error(), "shape of an AppSecret") || strings.Contains(err.Error(), "0123456789abcdef0123") {
		t.Fatalf("bad reload: err = %v, want refused without echoing the value", err)
	}
	if _, metrics := get(t, base+"/metrics", ""); !strings.Contains(metrics, "\ntokenkeeper_config_last_reload_successful 0\n") {
		t.Error("metrics do not show the refused reload")
	}
	// A restart-only change is refused too.
	current.Store(strings.Replace(yamlFor(both), `key_prefix: "rt:"`, `key_prefix: "other:"`, 1))
	if err := r.Reload(ctx); err == nil || !strings.Contains(err.Error(), "cache changed, which only a restart applies") {
		t.Fatalf("restart-only change: err = %v", err)
	}
	if code, _ := get(t, base+"/v1/apps/wx2/token", apiKey); code != http.StatusOK {
		t.Fatalf("wx2 after a refused reload: %d", code)
	}

	// Removed app: no longer served; its keys stay in Redis.
	current.Store(yamlFor(fmt.Sprintf("{id: wx1, secret: %q}", secret)))
	if err := r.Reload(ctx); err != nil {
		t.Fatalf("reload removing wx2: %v", err)
	}
	if _, metrics := get(t, base+"/metrics", ""); !strings.Contains(metrics, "\ntokenkeeper_config_last_reload_successful 1\n") {
		t.Error("metrics do not show the applied reload")
	}
	if code, _ := get(t, base+"/v1/apps/wx2/token", apiKey); code != http.StatusNotFound {
		t.Fatalf("wx2 after its removal: %d, want 404", code)
	}
	if !mr.Exists("rt:{wx2}:token") {
		t.Error("the removed app's record was deleted")
	}
	if !strings.Contains(logs.String(), "its Redis keys are left alone") {
		t.Error("the removal is not logged")
	}

	close(stop)
	wg.Wait()
	if failed.Load() != 0 || reads.Load() == 0 {
		t.Fatalf("%d of %d reads of wx1 failed during the reloads", failed.Load(), reads.Load())
	}
	if strings.Contains(logs.String(), secret2) {
		t.Fatal("logs contain a secret")
	}
}

// A wrong secret holds the app (configuration error); a reload with the
// right one, sent as SIGHUP, lifts the hold and the app is fetched at once.
func TestReloadWithFixedSecretLiftsTheHold(t *testing.T) {
	mr := miniredis.RunT(t)
	fake := wechattest.New(t, wechattest.WithApp("wx1", secret), wechattest.WithLifetime(time.Hour))
	yamlWith := func(s string) string {
		return fmt.Sprintf(`
identity: rt1
redis: {addrs: [%q]}
wechat: {base_url: %q, timeout: 2s}
apps: [{id: wx1, secret: %q}]
cache: {key_prefix: "rt:", lock_ttl: 2s, fetch_timeout: 1s}
lease: {name: "rt:leader", duration: 2s, renew_deadline: 1200ms, retry_period: 300ms}
http:
  addr: "127.0.0.1:0"
  api_keys: [{name: all, key: %q, apps: ["*"]}]
`, mr.Addr(), fake.URL(), s, apiKey)
	}
	const wrong = "replica-test-WRONG-secret-012345"
	var current atomic.Value
	current.Store(yamlWith(wrong))
	load := func() (*config.Config, error) {
		return config.Load(config.Options{File: "(test)", Environ: []string{}, YAML: []byte(current.Load().(string))})
	}
	cfg, err := load()
	if err != nil {
		t.Fatal(err)
	}
	logs := &testlog.Buffer{}
	hup := make(chan os.Signal, 1)
	listening := make(chan string, 1)
	reloaded := make(chan error, 1)
	r, err := refresher.New(cfg, slog.New(slog.NewTextHandler(logs, nil)), refresher.WithReloader(load), refresher.WithReloadSignal(hup),
		refresher.WithOnListening(func(addr string) { listening <- addr }), refresher.WithOnReload(func(err error) { reloaded <- err }))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- r.Run(ctx) }()
	defer func() {
		cancel()
		<-ran
	}()
	base := "http://" + <-listening
	if code, body := get(t, base+"/v1/apps/wx1/token", apiKey); code != http.StatusBadGateway || !strings.Contains(body, "configuration error") {
		t.Fatalf("with the wrong secret: %d %s, want 502 naming the configuration error", code, body)
	}
	if code, _ := get(t, base+"/v1/apps/wx1/token", apiKey); code != http.StatusBadGateway {
		t.Fatalf("held: %d", code)
	}
	if !mr.Exists("rt:{wx1}:hold") {
		t.Fatal("no fleet-wide hold after the configuration error")
	}

	current.Store(yamlWith(secret))
	hup <- syscall.SIGHUP
	select {
	case err := <-reloaded:
		if err != nil {
			t.Fatalf("reload on SIGHUP: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no reload within 5s of SIGHUP:\n%s", logs.String())
	}
	code, body := get(t, base+"/v1/apps/wx1/token", apiKey)
	if code != http.StatusOK || !strings.Contains(body, fake.CurrentToken("wx1")) {
		t.Fatalf("after the reload with the right secret: %d %s", code, body)
	}
	for _, s := range []string{secret, wrong} {
		if strings.Contains(logs.String(), s) {
			t.Fatal("logs contain a secret")
		}
	}
}
