package refresher_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/internal/refresher"
	"github.com/tokenkeeper/tokenkeeper/internal/testlog"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

// A replica whose app lists tickets keeps the ticket warm as leader and
// serves it, and JS-SDK configs signed with it, over HTTP.
func TestReplicaKeepsAndServesTickets(t *testing.T) {
	mr := miniredis.RunT(t)
	fake := wechattest.New(t, wechattest.WithApp("wx1", secret), wechattest.WithLifetime(time.Hour))
	cfg, err := config.Load(config.Options{File: "(test)", Environ: []string{}, YAML: []byte(fmt.Sprintf(`
identity: rt1
redis: {addrs: [%q]}
wechat: {base_url: %q, timeout: 2s}
apps: [{id: wx1, secret: %q, tickets: [jsapi]}]
cache: {key_prefix: "rt:", lock_ttl: 2s, fetch_timeout: 1s}
lease: {name: "rt:leader", duration: 2s, renew_deadline: 1200ms, retry_period: 300ms}
http:
  addr: "127.0.0.1:0"
  api_keys: [{name: all, key: %q, apps: ["*"]}]
`, mr.Addr(), fake.URL(), secret, apiKey))})
	if err != nil {
		t.Fatal(err)
	}
	logs := &testlog.Buffer{}
	listening := make(chan string, 1)
	r, err := refresher.New(cfg, slog.New(slog.NewTextHandler(logs, nil)), refresher.WithOnListening(func(addr string) { listening <- addr }))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- r.Run(ctx) }()
	defer func() { cancel(); <-ran }()
	base := "http://" + <-listening

	// The scheduler runs in the elector's goroutine, with no hook exposed
	// to tests: poll for the warmed record, bounded.
	key := tokencache.RecordKey(tokencache.TicketKeyPrefix("rt:", "jsapi"), "wx1")
	for i := 0; i < 100 && !mr.Exists(key); i++ {
		<-time.After(50 * time.Millisecond)
	}
	if !mr.Exists(key) {
		t.Fatalf("the jsapi ticket was not warmed within 5s:\n%s", logs.String())
	}
	code, body := get(t, base+"/v1/apps/wx1/tickets/jsapi", apiKey)
	var tk struct {
		Ticket string `json:"ticket"`
	}
	if code != http.StatusOK || json.Unmarshal([]byte(body), &tk) != nil || tk.Ticket != fake.CurrentTicket("wx1", "jsapi") {
		t.Fatalf("ticket: %d %s", code, body)
	}
	if code, _ := get(t, base+"/v1/apps/wx1/tickets/wx_card", apiKey); code != http.StatusNotFound {
		t.Errorf("wx_card, not configured: %d, want 404", code)
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/apps/wx1/jssdk-config", strings.NewReader(`{"url":"https://m.example.com/p#x"}`))
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var jc struct {
		AppID     string `json:"appId"`
		Timestamp int64  `json:"timestamp"`
		NonceStr  string `json:"nonceStr"`
		Signature string `json:"signature"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &jc) != nil {
		t.Fatalf("jssdk-config: %d %s", resp.StatusCode, b)
	}
	if err := fake.VerifyJSSDK("wx1", "https://m.example.com/p", jc.NonceStr, jc.Timestamp, jc.Signature); err != nil || jc.AppID != "wx1" {
		t.Errorf("the fake refuses the config %+v: %v", jc, err)
	}
	if n := fake.TicketsMinted("wx1", "jsapi"); n != 1 {
		t.Errorf("%d jsapi tickets minted, want 1 (warm and served share it)", n)
	}
	if _, m := get(t, base+"/metrics", ""); !strings.Contains(m, `tokenkeeper_ticket_usable_seconds{app="wx1",kind="jsapi"}`) ||
		!strings.Contains(m, `tokenkeeper_ticket_fetches_total{app="wx1",kind="jsapi",result="ok"} 1`) {
		t.Errorf("metrics lack the ticket series")
	}
	if strings.Contains(logs.String(), tk.Ticket) {
		t.Error("logs hold a whole ticket")
	}
}
