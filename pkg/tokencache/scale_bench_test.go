package tokencache_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// scaleSizes are the fleet sizes of the scale benchmarks: the per-app cost
// must stay flat (within 2x) from the first to the last.
var scaleSizes = []int{1_000, 10_000, 100_000}

func scaleApps(n int) []string {
	apps := make([]string, n)
	for i := range apps {
		apps[i] = fmt.Sprintf("wx%016d", i) // WeChat appids are 18 characters
	}
	return apps
}

// nopSource never fetches: the scale benchmarks that use it read records
// written beforehand.
type nopSource struct{}

func (nopSource) Fetch(context.Context, string) (wechat.Token, error) {
	return wechat.Token{}, fmt.Errorf("nopSource: no fetch expected")
}

// BenchmarkAddApps adds n apps to a new cache (Held is the cheapest call
// that creates an app's state: no I/O); the baseline is a plain map insert
// of a pointer per app in the same run. Reported: ns and bytes per app.
func BenchmarkAddApps(b *testing.B) {
	e := newBenchEnv(b)
	for _, n := range scaleSizes {
		apps := scaleApps(n)
		b.Run(fmt.Sprintf("cache/apps=%d", n), func(b *testing.B) {
			rdb := redis.NewClient(&redis.Options{Addr: e.redis.Addr()})
			b.Cleanup(func() { _ = rdb.Close() })
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				c, err := tokencache.New(rdb, nopSource{})
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				for _, app := range apps {
					if _, err := c.Admin().Held(app); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				_ = c.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/app")
		})
		b.Run(fmt.Sprintf("baseline-map/apps=%d", n), func(b *testing.B) {
			type state struct{ id string }
			b.ReportAllocs()
			for b.Loop() {
				m := make(map[string]*state)
				for _, app := range apps {
					m[app] = &state{id: app}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/app")
		})
	}
}

// writeRecords stores a fresh record for every app in pipelined batches,
// as a fleet's previous leader would have left them.
func writeRecords(tb testing.TB, rdb redis.UniversalClient, apps []string, now time.Time, life time.Duration) {
	tb.Helper()
	ctx := context.Background()
	for from := 0; from < len(apps); from += 1000 {
		pipe := rdb.Pipeline()
		for i, app := range apps[from:min(from+1000, len(apps))] {
			tok := tokencache.Token{
				Value: fmt.Sprintf("tok-%s-%d", app, i), Version: 1, Rev: now.UnixMilli(),
				FetchedAt: now, ExpiresAt: now.Add(life), UsableUntil: now.Add(life - time.Minute),
				RefreshAt: now.Add(life - 6*time.Minute),
			}
			pipe.Set(ctx, tokencache.RecordKey("tokenkeeper:", app), tokencache.EncodeRecord(tok), 0)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			tb.Fatal(err)
		}
	}
}

// BenchmarkFirstToken: a new process's first Token call for each of n
// apps whose records are in Redis (one GET each, from 16 goroutines, the
// app's state created on the way), and the batched alternative PeekMany
// (pipelined GETs) that a new leader uses; the baseline is the raw
// go-redis GETs of the same keys from 16 goroutines. Reported: ns per app.
func BenchmarkFirstToken(b *testing.B) {
	e := newBenchEnv(b)
	rdb := redis.NewClient(&redis.Options{Addr: e.redis.Addr(), PoolSize: 32})
	b.Cleanup(func() { _ = rdb.Close() })
	all := scaleApps(scaleSizes[len(scaleSizes)-1])
	writeRecords(b, rdb, all, time.Now(), 2*time.Hour)
	ctx := context.Background()
	const goroutines = 16
	each := func(apps []string, f func(app string) error) error {
		var wg sync.WaitGroup
		errs := make(chan error, goroutines)
		for g := range goroutines {
			wg.Go(func() {
				for i := g; i < len(apps); i += goroutines {
					if err := f(apps[i]); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		return <-errs
	}
	for _, n := range scaleSizes {
		apps := all[:n]
		perApp := func(b *testing.B) {
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/app")
		}
		fresh := func(b *testing.B) *tokencache.Cache {
			b.StopTimer()
			defer b.StartTimer()
			c, err := tokencache.New(rdb, nopSource{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = c.Close() })
			return c
		}
		b.Run(fmt.Sprintf("Token/apps=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c := fresh(b)
				if err := each(apps, func(app string) error { _, err := c.Token(ctx, app); return err }); err != nil {
					b.Fatal(err)
				}
			}
			perApp(b)
		})
		b.Run(fmt.Sprintf("PeekMany/apps=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c := fresh(b)
				for _, p := range c.Admin().PeekMany(ctx, apps) {
					if p.Err != nil || !p.Found {
						b.Fatalf("%s: found %v, err %v", p.AppID, p.Found, p.Err)
					}
				}
			}
			perApp(b)
		})
		b.Run(fmt.Sprintf("baseline-raw-GET/apps=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := each(apps, func(app string) error {
					return rdb.Get(ctx, tokencache.RecordKey("tokenkeeper:", app)).Err()
				}); err != nil {
					b.Fatal(err)
				}
			}
			perApp(b)
		})
	}
}
