package scheduler

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
)

// instantRefresher returns a token due in an hour without any I/O, so the
// benchmark measures the scheduler alone.
type instantRefresher struct{ tok tokencache.Token }

func (r instantRefresher) Refresh(ctx context.Context, app string) (tokencache.Token, error) {
	return r.tok, nil
}

func benchApps(n int) []string {
	apps := make([]string, n)
	for i := range apps {
		apps[i] = fmt.Sprintf("wx%016d", i) // WeChat appids are 18 characters
	}
	return apps
}

// BenchmarkSchedule10kApps measures one full cycle, real clock and timer:
// 10,000 apps due at once are each refreshed once (8 at a time) and
// rescheduled an hour later. One op is the whole cycle.
func BenchmarkSchedule10kApps(b *testing.B) {
	const n = 10000
	apps := benchApps(n)
	now := time.Now()
	ref := instantRefresher{tokencache.Token{Value: "t", Version: 1, RefreshAt: now.Add(time.Hour), UsableUntil: now.Add(2 * time.Hour)}}
	done := make(chan struct{}, 1)
	count := 0
	s, err := New(Config{Apps: apps, Refresher: ref, OnResult: func(Result) {
		if count++; count == n {
			done <- struct{}{}
		}
	}})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		count = 0
		ctx, cancel := context.WithCancel(context.Background())
		ran := make(chan error, 1)
		go func() { ran <- s.Run(ctx) }()
		select {
		case <-done:
		case <-time.After(time.Minute):
			b.Fatal("cycle did not finish within a minute")
		}
		cancel()
		<-ran
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/app")
}

// TestMemoryPerApp reports (with -v) what a Scheduler of 10,000 apps keeps
// on the heap once every app has been refreshed, and fails if an app costs
// more than 1 KiB.
func TestMemoryPerApp(t *testing.T) {
	if testing.Short() {
		t.Skip("measures the heap")
	}
	const n = 10000
	apps := benchApps(n)
	now := time.Now()
	ref := instantRefresher{tokencache.Token{Value: "t", Version: 1, RefreshAt: now.Add(time.Hour), UsableUntil: now.Add(2 * time.Hour)}}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	done := make(chan struct{})
	count := 0
	s, err := New(Config{Apps: apps, Refresher: ref, OnResult: func(Result) {
		if count++; count == n {
			close(done)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- s.Run(ctx) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("cycle did not finish within a minute")
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perApp := float64(after.HeapAlloc-before.HeapAlloc) / n
	cancel()
	<-ran
	runtime.KeepAlive(s)
	runtime.KeepAlive(apps)
	t.Logf("heap kept per app (scheduler state, appid strings excluded): %.0f B", perApp-float64(len(apps[0])))
	if perApp > 1024 {
		t.Fatalf("%.0f B of heap per app; want at most 1 KiB", perApp)
	}
}
