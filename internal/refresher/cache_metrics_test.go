package refresher_test

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

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
	base := runReplica(t, cfg, func(logs *testlog.Buffer) slog.Handler { return slog.NewTextHandler(logs, nil) }).base
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
