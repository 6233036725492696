package backend_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/internal/refresher"
	"github.com/tokenkeeper/tokenkeeper/internal/status"
	"github.com/tokenkeeper/tokenkeeper/internal/testlog"
	"github.com/tokenkeeper/tokenkeeper/internal/tokencmd"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

// The tests of this file run tokenkeeper against Redis as it is deployed:
// an ACL user, TLS, Sentinel, independent Redlock masters. Each starts the
// real servers it names (internal/redistest).

const (
	deployedSecret = "deployed-test-secret-0123456789"
	deployedAPIKey = "deployed-test-api-key-0123456789"
)

// deployedConfig is a refresher configuration whose redis section is
// redisYAML (the inside of `redis: {...}`), with short timings.
func deployedConfig(t *testing.T, redisYAML, wechatURL string) *config.Config {
	t.Helper()
	return deployedConfigWith(t, redisYAML, "lock_ttl: 2s, fetch_timeout: 1s", wechatURL)
}

// deployedConfigWith is deployedConfig with cacheYAML as the inside of
// `cache: {...}`.
func deployedConfigWith(t *testing.T, redisYAML, cacheYAML, wechatURL string) *config.Config {
	t.Helper()
	yaml := fmt.Sprintf(`
identity: deployed-1
redis: {%s}
wechat: {base_url: %q, timeout: 2s}
apps: [{id: wx1, secret: %q}]
cache: {%s}
lease: {duration: 3s, renew_deadline: 2s, retry_period: 300ms}
http:
  addr: "127.0.0.1:0"
  api_keys: [{name: all, key: %q, apps: ["*"]}]
`, redisYAML, wechatURL, deployedSecret, cacheYAML, deployedAPIKey)
	cfg, err := config.Load(config.Options{File: "(test)", YAML: []byte(yaml), Environ: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// replica is a refresher replica running in this process.
type replica struct {
	base string
	logs *testlog.Buffer
	h    signalHandler
	stop func() // cancels Run and waits for it
}

// The log messages a test can await.
const (
	msgStartedLeading = "refresher: started leading; running the refresh scheduler"
	msgStoppedLeading = "lock: stopped leading"
)

// startReplica runs a replica of cfg until stop or the test's end, and
// returns once it listens.
func startReplica(t *testing.T, cfg *config.Config) *replica {
	t.Helper()
	r := &replica{logs: &testlog.Buffer{}}
	r.h = newSignalHandler(slog.NewTextHandler(r.logs, nil), msgStartedLeading, msgStoppedLeading)
	listening := make(chan string, 1)
	rep, err := refresher.New(cfg, slog.New(r.h), refresher.WithOnListening(func(addr string) { listening <- addr }))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- rep.Run(ctx) }()
	stopped := false
	r.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-ran:
			if err != nil {
				t.Errorf("%s: Run: %v", cfg.Identity, err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("%s: Run did not return within 15s of cancel", cfg.Identity)
		}
	}
	t.Cleanup(r.stop)
	select {
	case addr := <-listening:
		r.base = "http://" + addr
	case err := <-ran:
		t.Fatalf("Run returned before listening: %v\n%s", err, r.logs)
	case <-time.After(5 * time.Second):
		t.Fatalf("not listening within 5s\n%s", r.logs)
	}
	return r
}

// awaitLeading waits until the replica leads.
func (r *replica) awaitLeading(t *testing.T, within time.Duration) {
	t.Helper()
	r.await(t, msgStartedLeading, within)
}

// await waits for the first log record with msg (one of those above).
func (r *replica) await(t *testing.T, msg string, within time.Duration) {
	t.Helper()
	select {
	case <-r.h.signals[msg].ch:
	case <-time.After(within):
		t.Fatalf("no %q within %v; log:\n%s", msg, within, r.logs)
	}
}

// logged reports whether the replica has logged msg (one of those above).
func (r *replica) logged(msg string) bool {
	select {
	case <-r.h.signals[msg].ch:
		return true
	default:
		return false
	}
}

func (r *replica) do(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, r.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+deployedAPIKey)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// signalHandler closes the channel of a message (given at construction)
// on the first record with that message, also when the record comes
// through a handler made by WithAttrs or WithGroup.
type signalHandler struct {
	slog.Handler
	signals map[string]*signal
}

type signal struct {
	ch   chan struct{}
	once sync.Once
}

func newSignalHandler(h slog.Handler, msgs ...string) signalHandler {
	s := signalHandler{h, map[string]*signal{}}
	for _, m := range msgs {
		s.signals[m] = &signal{ch: make(chan struct{})}
	}
	return s
}

func (h signalHandler) Handle(ctx context.Context, r slog.Record) error {
	err := h.Handler.Handle(ctx, r)
	if s := h.signals[r.Message]; s != nil {
		s.once.Do(func() { close(s.ch) })
	}
	return err
}

func (h signalHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return signalHandler{h.Handler.WithAttrs(a), h.signals}
}

func (h signalHandler) WithGroup(name string) slog.Handler {
	return signalHandler{h.Handler.WithGroup(name), h.signals}
}

// upstream is a fake WeChat served by the test, which signals each call
// of the token endpoint as it arrives.
type upstream struct {
	*wechattest.Server
	url        string
	tokenCalls chan struct{}
}

func newUpstream(t *testing.T, opts ...wechattest.Option) *upstream {
	t.Helper()
	fake := wechattest.NewHandler(append([]wechattest.Option{wechattest.WithApp("wx1", deployedSecret), wechattest.WithLifetime(time.Hour)}, opts...)...)
	up := &upstream{Server: fake, tokenCalls: make(chan struct{}, 64)}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/cgi-bin/token" {
			select {
			case up.tokenCalls <- struct{}{}:
			default:
			}
		}
		fake.Handler().ServeHTTP(w, r)
	}))
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = l
	srv.Start()
	t.Cleanup(func() { fake.Close(); srv.Close() })
	up.url = srv.URL
	return up
}

// exercise runs everything tokenkeeper does against cfg's Redis and fails
// t if any of it fails: two one-shot token commands at once (one fetches
// under the lock, the other waits for its announcement), a replica that leads
// (lease, scheduler, pub/sub subscription) and serves the token over
// HTTP, a passive refresh after WeChat revoked the token (budget, verdict,
// announcement, last-fetch record), the one-shot invalidate command, the
// status report, and a clean shutdown releasing the lease.
func exercise(t *testing.T, cfg *config.Config, fake *upstream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fake.InjectFault(wechattest.Fault{Kind: wechattest.FaultLatency, AppID: "wx1", Latency: 700 * time.Millisecond}) // under fetch_timeout
	var outA, outB, out bytes.Buffer
	aDone := make(chan error, 1)
	go func() { aDone <- tokencmd.Token(ctx, cfg, "wx1", &outA) }()
	select {
	case <-fake.tokenCalls: // A holds the lock now, for the fault's 700 ms
	case err := <-aDone:
		t.Fatalf("first token command: %v", err)
	}
	if err := tokencmd.Token(ctx, cfg, "wx1", &outB); err != nil {
		t.Fatalf("second token command: %v", err)
	}
	if err := <-aDone; err != nil {
		t.Fatalf("first token command: %v", err)
	}
	first := fake.CurrentToken("wx1")
	if !strings.Contains(outA.String(), first) || !strings.Contains(outB.String(), first) {
		t.Fatalf("token commands printed %q and %q, not the fake's current token", outA.String(), outB.String())
	}
	if n := fake.Stats("wx1").Minted; n != 1 {
		t.Fatalf("%d tokens minted for two commands at once, want 1", n)
	}

	r := startReplica(t, cfg)
	r.awaitLeading(t, 10*time.Second)
	if code, body := r.do(t, http.MethodGet, "/readyz", ""); code != http.StatusOK {
		t.Fatalf("/readyz: %d %s", code, body)
	}
	if code, body := r.do(t, http.MethodGet, "/v1/apps/wx1/token", ""); code != http.StatusOK || !strings.Contains(body, first) {
		t.Fatalf("GET token: %d %s", code, body)
	}
	fake.Revoke("wx1", first)
	if code, body := r.do(t, http.MethodPost, "/v1/apps/wx1/invalidate", `{"access_token":"`+first+`"}`); code != http.StatusOK || strings.Contains(body, first) {
		t.Fatalf("invalidate: %d %s", code, body)
	}
	second := fake.CurrentToken("wx1")
	if second == first {
		t.Fatal("the passive refresh minted no new token")
	}
	if code, body := r.do(t, http.MethodGet, "/v1/apps/wx1/token", ""); code != http.StatusOK || !strings.Contains(body, second) {
		t.Fatalf("GET token after the refresh: %d %s", code, body)
	}
	out.Reset()
	if err := tokencmd.Invalidate(ctx, cfg, "wx1", first, &out); err != nil || !strings.Contains(out.String(), second) {
		t.Fatalf("invalidate command: %v %q", err, out.String())
	}
	out.Reset()
	if err := status.Print(ctx, cfg, &out); err != nil {
		t.Fatalf("status: %v", err)
	}
	if !strings.Contains(out.String(), "leader: "+cfg.Identity) {
		t.Fatalf("status does not name the leader:\n%s", out.String())
	}
	r.stop()
	for _, line := range strings.Split(r.logs.String(), "\n") {
		// The revocation above is logged as an error on purpose.
		if strings.Contains(line, "level=ERROR") && !strings.Contains(line, "killed outside the fleet") {
			t.Errorf("the replica logged an error: %s", line)
		}
	}
}
