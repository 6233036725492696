package scheduler

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
)

// batchRefresher is a fakeRefresher that is also a BatchPeeker answering
// from records; it counts its calls and the apps asked for.
type batchRefresher struct {
	*fakeRefresher
	mu      sync.Mutex
	records map[string]tokencache.Peeked
	calls   int
	asked   int
}

func (b *batchRefresher) PeekMany(ctx context.Context, apps []string) []tokencache.Peeked {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls++
	b.asked += len(apps)
	out := make([]tokencache.Peeked, len(apps))
	for i, app := range apps {
		out[i] = b.records[app]
		out[i].AppID = app
	}
	return out
}

// TestRunPlansFromRecords: a Refresher that is a BatchPeeker has every
// record read in batches when Run starts; an app with a record not yet
// due is planned at its RefreshAt (plus jitter) and not refreshed; an app
// with no record, a due record or an unreadable one is refreshed at once;
// OnPlanned reports the counts before the first Refresh.
func TestRunPlansFromRecords(t *testing.T) {
	clock := &fakeClock{now: t0}
	ref := &batchRefresher{fakeRefresher: steady(clock), records: map[string]tokencache.Peeked{
		"wxfresh": {Found: true, Token: tokenAt(t0, 30*time.Minute, 10*time.Minute)},
		"wxlater": {Found: true, Token: tokenAt(t0, 50*time.Minute, 10*time.Minute)},
		"wxdue":   {Found: true, Token: tokenAt(t0, -time.Second, 10*time.Minute)},
		"wxerr":   {Err: errors.New("redis: connection refused")},
		// wxnone: no record
	}}
	plans := make(chan Plan, 1)
	h := startOn(t, clock, Config{
		Apps:      []string{"wxfresh", "wxnone", "wxlater", "wxdue", "wxerr"},
		Refresher: ref,
		OnPlanned: func(p Plan) { plans <- p },
	}, zeroRand)
	var p Plan
	select {
	case p = <-plans:
	case <-time.After(5 * time.Second):
		t.Fatal("no plan within 5s")
	}
	if p.Apps != 5 || p.FromRecords != 2 || p.DueNow != 3 {
		t.Fatalf("plan %+v; want 5 apps, 2 from records, 3 due now", p)
	}
	got := map[string]bool{}
	for range 3 {
		got[h.result().AppID] = true
	}
	for _, app := range []string{"wxnone", "wxdue", "wxerr"} {
		if !got[app] {
			t.Fatalf("refreshed at once: %v; want wxnone, wxdue and wxerr", got)
		}
	}
	// Next due: wxfresh at its RefreshAt, then wxlater.
	if next := h.waitIdle(); !next.Equal(t0.Add(30 * time.Minute)) {
		t.Fatalf("idle until %v; want wxfresh's RefreshAt %v", next, t0.Add(30*time.Minute))
	}
	if ref.count("wxfresh") != 0 || ref.count("wxlater") != 0 {
		t.Fatal("an app with a fresh record was refreshed at start")
	}
	if ref.calls != 1 || ref.asked != 5 {
		t.Fatalf("%d PeekMany calls for %d apps; want one for all 5", ref.calls, ref.asked)
	}
	h.clock.advanceTo(t0.Add(30 * time.Minute))
	if r := h.result(); r.AppID != "wxfresh" {
		t.Fatalf("first refresh after the plan: %s; want wxfresh", r.AppID)
	}
}

// TestPlanSkipsStoppedApps: an app removed from the schedule (SetApps, on a
// reload) is not read again in the next term. (A configuration error no
// longer stops an app: it is retried slowly.)
func TestPlanSkipsStoppedApps(t *testing.T) {
	clock := &fakeClock{now: t0}
	ref := &batchRefresher{fakeRefresher: newFakeRefresher(func(ctx context.Context, app string, n int) (tokencache.Token, error) {
		return tokenAt(clock.Now(), time.Hour, 10*time.Minute), nil
	}), records: map[string]tokencache.Peeked{}}
	plans := make(chan Plan, 2)
	h := startOn(t, clock, Config{Apps: []string{"wxa", "wxgone"}, Refresher: ref, OnPlanned: func(p Plan) { plans <- p }}, zeroRand)
	<-plans
	h.result()
	h.result()
	h.waitIdle()
	h.s.SetApps([]string{"wxa"})
	h.cancel()
	<-h.done
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.s.Run(ctx) }()
	select {
	case p := <-plans:
		if p.Apps != 1 {
			t.Errorf("second term planned %d apps; want 1 (wxgone was removed)", p.Apps)
		}
	case <-time.After(5 * time.Second):
		t.Error("no plan within 5s")
	}
	cancel()
	<-done
	h.done <- nil // for the harness's cleanup
}

// TestPlanStopsWhenRedisAnswersNothing: when a whole chunk of the first
// pass fails (Redis down or frozen until the call timeout), the pass reads
// no further chunk: every app left is due at once, so a dead Redis delays
// the first refreshes by one round of chunks, not by one per chunk.
func TestPlanStopsWhenRedisAnswersNothing(t *testing.T) {
	clock := &fakeClock{now: t0}
	down := errors.New("redis: connection refused")
	n := planChunk*planParallel*2 + 1
	apps := make([]string, n)
	records := map[string]tokencache.Peeked{}
	for i := range apps {
		apps[i] = fmt.Sprintf("wx%06d", i)
		records[apps[i]] = tokencache.Peeked{Err: down}
	}
	ref := &batchRefresher{fakeRefresher: steady(clock), records: records}
	plans := make(chan Plan, 1)
	startOn(t, clock, Config{Apps: apps, Refresher: ref, OnPlanned: func(p Plan) { plans <- p }}, zeroRand)
	select {
	case p := <-plans:
		if p.FromRecords != 0 || p.DueNow != n {
			t.Fatalf("plan %+v; want all %d apps due at once", p, n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no plan within 5s")
	}
	ref.mu.Lock()
	defer ref.mu.Unlock()
	if ref.calls > planParallel {
		t.Fatalf("%d PeekMany calls with Redis answering nothing; want at most the %d run at once", ref.calls, planParallel)
	}
}
