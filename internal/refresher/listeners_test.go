package refresher_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/internal/redistest"
	"github.com/tokenkeeper/tokenkeeper/internal/refresher"
	"github.com/tokenkeeper/tokenkeeper/internal/testlog"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

// The API over TLS, its certificate replaced by a reload; /metrics on the
// operations listener only.
func TestTLSAndOperationsListener(t *testing.T) {
	mr := miniredis.RunT(t)
	fake := wechattest.New(t, wechattest.WithApp("wx1", secret), wechattest.WithLifetime(time.Hour))
	dir := t.TempDir()
	certFile, keyFile, _ := redistest.WriteSelfSigned(t, dir, "first")
	yaml := fmt.Sprintf(`
identity: rt1
redis: {addrs: [%q]}
wechat: {base_url: %q, timeout: 2s}
apps: [{id: wx1, secret: %q}]
cache: {key_prefix: "rt:", lock_ttl: 2s, fetch_timeout: 1s}
lease: {name: "rt:leader", duration: 2s, renew_deadline: 1200ms, retry_period: 300ms}
metrics: {addr: "127.0.0.1:0"}
http:
  addr: "127.0.0.1:0"
  tls: {cert_file: %q, key_file: %q}
  api_keys: [{name: all, key: %q, apps: ["*"]}]
`, mr.Addr(), fake.URL(), secret, certFile, keyFile, apiKey)
	load := func() (*config.Config, error) {
		return config.Load(config.Options{File: "(test)", Environ: []string{}, YAML: []byte(yaml)})
	}
	cfg, err := load()
	if err != nil {
		t.Fatal(err)
	}
	apiAddr, opsAddr := make(chan string, 1), make(chan string, 1)
	r, err := refresher.New(cfg, slog.New(slog.NewTextHandler(&testlog.Buffer{}, nil)), refresher.WithReloader(load),
		refresher.WithOnListening(func(a string) { apiAddr <- a }), refresher.WithOnOpsListening(func(a string) { opsAddr <- a }))
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
	api := <-apiAddr
	ops := <-opsAddr

	var servedCN string
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		InsecureSkipVerify: true, //nolint:gosec // the test checks which certificate is served
		VerifyConnection: func(cs tls.ConnectionState) error {
			servedCN = cs.PeerCertificates[0].Subject.CommonName
			return nil
		}}, DisableKeepAlives: true}}
	do := func(url, key string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := do("https://"+api+"/v1/apps/wx1/token", apiKey); code != http.StatusOK || servedCN != "first" {
		t.Fatalf("token over TLS: %d %s (certificate %q)", code, body, servedCN)
	}
	if code, _ := do("http://"+api+"/v1/apps/wx1/token", apiKey); code != http.StatusBadRequest {
		t.Errorf("plain HTTP to the TLS listener: %d, want 400 (Go's answer to HTTP on a TLS port)", code)
	}
	if code, _ := do("https://"+api+"/metrics", ""); code != http.StatusNotFound {
		t.Errorf("/metrics on the API listener: %d, want 404 (moved to metrics.addr)", code)
	}
	if code, body := do("http://"+ops+"/metrics", ""); code != http.StatusOK || !strings.Contains(body, "tokenkeeper_") {
		t.Errorf("/metrics on the operations listener: %d", code)
	}
	if code, _ := do("http://"+ops+"/v1/apps/wx1/token", apiKey); code != http.StatusNotFound {
		t.Errorf("token route on the operations listener: %d, want 404", code)
	}

	redistest.WriteSelfSigned(t, dir, "second")
	if err := r.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if code, _ := do("https://"+api+"/healthz", ""); code != http.StatusOK || servedCN != "second" {
		t.Fatalf("after the reload: %d, certificate %q, want second", code, servedCN)
	}
}
