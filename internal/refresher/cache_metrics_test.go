package refresher_test

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/tokenkeeper/tokenkeeper/internal/testlog"
)

// The replica exports the cache's own counters (corrupt records, passive
// refresh outcomes, revalidations, subscription gaps) and the killed-outside
// counter, read at scrape time: nothing is added to the token hit path.
func TestReplicaExportsTheCachesCounters(t *testing.T) {
	cfg := onMiniredis(t, "127.0.0.1:0").Config
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
