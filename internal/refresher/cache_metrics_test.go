package refresher_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/tokenkeeper/tokenkeeper/internal/refresher"
	"github.com/tokenkeeper/tokenkeeper/internal/testlog"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

// The replica exports the cache's own counters (corrupt records, passive
// refresh outcomes, revalidations, subscription gaps) and the killed-outside
// counter, read at scrape time: nothing is added to the token hit path.
func TestReplicaExportsTheCachesCounters(t *testing.T) {
	mr := miniredis.RunT(t)
	fake := wechattest.New(t, wechattest.WithApp("wx1", secret), wechattest.WithLifetime(time.Hour))
	cfg := testConfig(t, mr.Addr(), fake.URL(), "127.0.0.1:0")
	logs := &testlog.Buffer{}
	listening := make(chan string, 1)
	r, err := refresher.New(cfg, slog.New(slog.NewTextHandler(logs, nil)), refresher.WithOnListening(func(addr string) { listening <- addr }))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-ran:
		case <-time.After(15 * time.Second):
			t.Error("Run did not return within 15s of cancel")
		}
	})
	var base string
	select {
	case addr := <-listening:
		base = "http://" + addr
	case err := <-ran:
		t.Fatalf("Run returned before listening: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("not listening within 5s")
	}
	_, metrics := get(t, base+"/metrics", "")
	for _, want := range []string{
		"\ntokenkeeper_cache_corrupt_records_total ",
		"\ntokenkeeper_cache_subscription_gaps_total ",
		"\ntokenkeeper_cache_revalidations_total{result=\"error\"} ",
		"\ntokenkeeper_invalidations_total{outcome=\"refuted\"} ",
		"\ntokenkeeper_invalidations_total{outcome=\"ignored\"} ",
		"\n# TYPE tokenkeeper_tokens_killed_outside_total counter\n",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", strings.TrimSpace(want))
		}
	}
}
