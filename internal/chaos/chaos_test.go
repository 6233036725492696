package chaos

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/redistest"
)

// testLog sends the run's progress lines to t.Log.
type testLog struct {
	t  *testing.T
	mu sync.Mutex
}

func (w *testLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// buildChildren builds the chaos binary (the readers) and the refresher,
// without -race so that 10 readers and 3 replicas stay fast on two cores.
func buildChildren(t *testing.T) (readerBin, refresherBin string) {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	readerBin, refresherBin = filepath.Join(dir, "chaos"), filepath.Join(dir, "refresher")
	if err := BuildBinary(ctx, ChaosPkg, readerBin); err != nil {
		t.Fatal(err)
	}
	if err := BuildBinary(ctx, RefresherPkg, refresherBin); err != nil {
		t.Fatal(err)
	}
	return readerBin, refresherBin
}

func runChaos(t *testing.T, cfg Config) *Report {
	t.Helper()
	cfg.WorkDir = t.TempDir()
	cfg.RedisBin = redistest.Binary(t)
	cfg.Log = &testLog{t: t}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Duration+3*time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("chaos run failed: %v", err)
	}
	var text bytes.Buffer
	rep.WriteText(&text)
	t.Log("\n" + text.String())
	for _, v := range rep.Violations {
		t.Errorf("invariant broken: %s", v)
	}
	if !rep.ReaderView.AllFinal {
		t.Errorf("not every reader printed its final report")
	}
	return rep
}

// TestChaosShort is the short chaos run: 3 apps with 20 s tokens and a 5 s
// grace, 10 reader processes of 20 goroutines, 3 refresher replicas.
// Without faults every app is fetched exactly once per refresh interval
// and no business call meets a dead token; with every fault of the
// schedule, no business call meets a dead token outside the data-loss
// window of the Redis restart, and no app is fetched more than the ideal
// plus one per fault that may force a refetch.
func TestChaosShort(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos run takes about 90 s")
	}
	redistest.Binary(t)
	readerBin, refresherBin := buildChildren(t)
	base := DefaultConfig()
	base.ReaderBin, base.RefresherBin = readerBin, refresherBin

	t.Run("NoFaults", func(t *testing.T) {
		cfg := base
		cfg.Faults = false
		cfg.Duration = 20 * time.Second
		rep := runChaos(t, cfg)
		for _, af := range rep.Fetches.PerApp {
			if af.Minted != af.Ideal && af.Minted != af.MinIdeal {
				t.Errorf("app %s: %d tokens minted, want the ideal %d", af.App, af.Minted, af.Ideal)
			}
		}
		if d := rep.Business.Dead(); d != 0 {
			t.Errorf("%d business calls on a dead token without any fault", d)
		}
		if rep.Business.OK < 1000 {
			t.Errorf("only %d business calls answered ok: the readers did not really run", rep.Business.OK)
		}
	})

	t.Run("AllFaults", func(t *testing.T) {
		cfg := base
		rep := runChaos(t, cfg)
		kinds := map[string]bool{}
		for _, f := range rep.Faults {
			if f.Applied {
				kinds[f.Kind] = true
			}
		}
		for _, k := range cycle {
			if !kinds[k] && !(k == FaultLeaderKill && cfg.Replicas == 0) {
				t.Errorf("fault %s never applied: the run did not test it", k)
			}
		}
		if cfg.Replicas > 0 && len(rep.Leader.Takeovers) == 0 {
			t.Errorf("no takeover measured after the leader was killed")
		}
	})
}
