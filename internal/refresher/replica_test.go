package refresher_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/tokenkeeper/tokenkeeper/internal/backend"
	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/internal/refresher"
	"github.com/tokenkeeper/tokenkeeper/internal/status"
	"github.com/tokenkeeper/tokenkeeper/internal/testlog"
	"github.com/tokenkeeper/tokenkeeper/internal/tktest/fleet"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

const (
	apiKey = "replica-test-api-key-0123456789"
	secret = "replica-test-secret-0123456789"
)

func testConfig(t *testing.T, redisAddr, wechatURL, httpAddr string) *config.Config {
	t.Helper()
	return fleet.LoadConfig(t, replicaYAML(httpAddr), redisAddr, wechatURL)
}

// onMiniredis is a replica's world: a miniredis, a fake WeChat that knows
// wx1, and testConfig's configuration listening on httpAddr.
func onMiniredis(t *testing.T, httpAddr string) *fleet.Refresher {
	t.Helper()
	return fleet.NewRefresher(t, []wechattest.Option{wechattest.WithApp("wx1", secret), wechattest.WithLifetime(time.Hour)}, replicaYAML(httpAddr))
}

func replicaYAML(httpAddr string) string {
	return fmt.Sprintf(`
identity: rt1
wechat: {timeout: 2s}
apps: [{id: wx1, secret: %q}]
cache: {key_prefix: "rt:", lock_ttl: 2s, fetch_timeout: 1s}
lease: {name: "rt:leader", duration: 2s, renew_deadline: 1200ms, retry_period: 300ms}
http:
  addr: %q
  api_keys: [{name: all, key: %q, apps: ["*"]}]
`, secret, httpAddr, apiKey)
}

func get(t *testing.T, url, key string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestReplicaServesLeadsAndReleases runs one replica in-process on
// miniredis and a fake WeChat: it listens where it says, becomes leader,
// refreshes (recording the last fetch), serves the token with auth, and on
// cancellation returns nil with the lease released.
func TestReplicaServesLeadsAndReleases(t *testing.T) {
	w := onMiniredis(t, "127.0.0.1:0")
	mr, fake, cfg := w.Mini, w.Fake, w.Config
	logs := &testlog.Buffer{}
	listening := make(chan string, 1)
	r, err := refresher.New(cfg, slog.New(slog.NewTextHandler(logs, nil)), refresher.WithOnListening(func(addr string) { listening <- addr }))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- r.Run(ctx) }()
	var base string
	select {
	case addr := <-listening:
		base = "http://" + addr
	case err := <-ran:
		t.Fatalf("Run returned before listening: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("not listening within 5s")
	}

	// The elector runs in another goroutine with no hook exposed to
	// tests: poll readiness, bounded.
	ready := false
	for i := 0; i < 100 && !ready; i++ {
		code, _ := get(t, base+"/readyz", "")
		ready = code == http.StatusOK
		if !ready {
			<-time.After(50 * time.Millisecond)
		}
	}
	if !ready {
		t.Fatalf("not ready within 5s:\n%s", logs.String())
	}
	if got, _ := mr.Get("rt:leader"); !strings.HasPrefix(got, "rt1/") {
		t.Errorf("lease value %q, want held by rt1", got)
	}

	if code, _ := get(t, base+"/v1/apps/wx1/token", ""); code != http.StatusUnauthorized {
		t.Errorf("no API key: %d, want 401", code)
	}
	code, body := get(t, base+"/v1/apps/wx1/token", apiKey)
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if code != http.StatusOK || json.Unmarshal([]byte(body), &tok) != nil || tok.AccessToken != fake.CurrentToken("wx1") {
		t.Fatalf("token: %d %s", code, body)
	}
	if _, metrics := get(t, base+"/metrics", ""); !strings.Contains(metrics, "\ntokenkeeper_leader 1\n") || !strings.Contains(metrics, `app="wx1"`) {
		t.Errorf("metrics lack the leader gauge or the app's gauges")
	}

	cancel()
	select {
	case err := <-ran:
		if err != nil {
			t.Errorf("Run after cancel: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return within 15s of cancel")
	}
	if mr.Exists("rt:leader") {
		t.Error("lease still held after Run returned")
	}
	// The writer was closed after its queued record was written.
	data, err := mr.Get("rt:{wx1}:last_fetch")
	if err != nil {
		t.Fatalf("no last_fetch record: %v", err)
	}
	if rec, err := status.DecodeRecord([]byte(data)); err != nil || rec.Result != "ok" || rec.By != "rt1" {
		t.Errorf("last_fetch %+v %v", rec, err)
	}
	for _, want := range []string{"started leading", "left the election"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %q", want)
		}
	}
	if strings.Contains(logs.String(), secret) || strings.Contains(logs.String(), apiKey) || strings.Contains(logs.String(), tok.AccessToken) {
		t.Error("logs hold a secret, the API key or a whole token")
	}
}

func TestPortBusy(t *testing.T) {
	mr := miniredis.RunT(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := testConfig(t, mr.Addr(), "http://127.0.0.1:1", ln.Addr().String())
	r, err := refresher.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	err = r.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), ln.Addr().String()+" is already in use") || !strings.Contains(err.Error(), "--http-addr") {
		t.Fatalf("Run: %v", err)
	}
	if mr.Exists("rt:leader") {
		t.Error("a replica that cannot serve joined the election")
	}
}

func TestNewRefusesWhatTheLibrariesRefuse(t *testing.T) {
	cfg := testConfig(t, "127.0.0.1:1", "http://127.0.0.1:1", "127.0.0.1:0")
	cfg.Lease.RetryPeriod = 0 // bypasses config validation; the elector refuses it
	_, err := refresher.New(cfg, slog.New(slog.DiscardHandler))
	if !errors.Is(err, backend.ErrConfig) {
		t.Fatalf("New with a zero retry period: %v, want backend.ErrConfig", err)
	}
}
