package tokencache_test

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/internal/redistest"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

// benchEnv is a real redis-server, a fake WeChat with 2-hour tokens and a
// source on it.
type benchEnv struct {
	redis *redistest.Server
	fake  *wechattest.Server
	src   *wechat.Source
}

func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	e := &benchEnv{redis: redistest.Start(b)}
	e.fake = wechattest.New(b, wechattest.WithApp(appID, secret), wechattest.WithDailyQuota(1_000_000))
	src, err := wechat.NewSource(wechat.NewClient(wechat.WithBaseURL(e.fake.URL())), wechat.App{ID: appID, Secret: secret})
	if err != nil {
		b.Fatal(err)
	}
	e.src = src
	return e
}

func (e *benchEnv) cache(b *testing.B, opts ...tokencache.Option) (*tokencache.Cache, *redis.Client) {
	b.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: e.redis.Addr()})
	b.Cleanup(func() { _ = rdb.Close() })
	c, err := tokencache.New(rdb, e.src, append([]tokencache.Option{tokencache.WithDailyBudget(0), tokencache.WithLogger(benchLogger())}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	if _, err := c.Token(context.Background(), appID); err != nil {
		b.Fatal(err)
	}
	return c, rdb
}

// BenchmarkToken compares, on one real Redis in one run: a near-cache hit,
// a Token call with the near cache off (GET + decode), and the baseline, a
// raw go-redis GET of the same key.
func BenchmarkToken(b *testing.B) {
	e := newBenchEnv(b)
	ctx := context.Background()
	b.Run("near-hit", func(b *testing.B) {
		c, _ := e.cache(b)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Token(ctx, appID); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("near-off", func(b *testing.B) {
		c, _ := e.cache(b, tokencache.WithNearMaxAge(0))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Token(ctx, appID); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("raw-redis-GET", func(b *testing.B) {
		_, rdb := e.cache(b)
		key := "tokenkeeper:{" + appID + "}:token"
		b.ReportAllocs()
		for b.Loop() {
			if err := rdb.Get(ctx, key).Err(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("near-hit-parallel", func(b *testing.B) {
		c, _ := e.cache(b)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := c.Token(ctx, appID); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkHerd: 20 processes x 20 goroutines all find the token gone (a
// cold start, or an expiry nobody refreshed) at once. Reported: upstream
// fetches per refresh (the goal is exactly 1).
func BenchmarkHerd(b *testing.B) {
	e := newBenchEnv(b)
	var caches []*tokencache.Cache
	var admin *redis.Client
	for i := 0; i < 20; i++ {
		c, rdb := e.cache(b)
		caches, admin = append(caches, c), rdb
	}
	ctx := context.Background()
	start := e.fake.Stats(appID).Minted
	for b.Loop() {
		// Every process holds cur and reports it dead at once, after the
		// record is gone: the worst herd, a passive refresh on a miss.
		cur, err := caches[0].Token(ctx, appID)
		if err != nil {
			b.Fatal(err)
		}
		if err := admin.Del(ctx, "tokenkeeper:{"+appID+"}:token").Err(); err != nil {
			b.Fatal(err)
		}
		var wg sync.WaitGroup
		for _, c := range caches {
			for g := 0; g < 20; g++ {
				wg.Add(1)
				go func(c *tokencache.Cache) {
					defer wg.Done()
					if _, err := c.Invalidate(ctx, appID, cur.Value); err != nil {
						b.Error(err)
					}
				}(c)
			}
		}
		wg.Wait()
	}
	fetches := e.fake.Stats(appID).Minted - start
	b.ReportMetric(float64(fetches)/float64(b.N), "fetches/refresh")
}

// BenchmarkTokenLatencyDuringRotation measures Token() while the token is
// replaced every 50 ms (each replacement drops every near copy at once).
// Reported: percentiles of the latency a reader sees; nobody waits on the
// upstream.
func BenchmarkTokenLatencyDuringRotation(b *testing.B) {
	e := newBenchEnv(b)
	reader, _ := e.cache(b)
	rotator, _ := e.cache(b)
	ctx := context.Background()
	stop := make(chan struct{})
	var rotations atomic.Int64
	go func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				cur, err := rotator.Token(ctx, appID)
				if err == nil {
					if _, err := rotator.Invalidate(ctx, appID, cur.Value); err == nil {
						rotations.Add(1)
					}
				}
			}
		}
	}()
	var mu sync.Mutex
	var all []time.Duration
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		lat := make([]time.Duration, 0, 1<<16)
		for pb.Next() {
			t0 := time.Now()
			if _, err := reader.Token(ctx, appID); err != nil {
				b.Error(err)
				return
			}
			lat = append(lat, time.Since(t0))
		}
		mu.Lock()
		all = append(all, lat...)
		mu.Unlock()
	})
	b.StopTimer()
	close(stop)
	slices.Sort(all)
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[min(len(all)-1, int(p*float64(len(all))))].Microseconds())
	}
	b.ReportMetric(pct(0.5), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
	b.ReportMetric(pct(0.9999), "p99.99-µs")
	b.ReportMetric(float64(all[len(all)-1].Microseconds()), "max-µs")
	b.ReportMetric(float64(rotations.Load()), "rotations")
}

func benchLogger() *slog.Logger {
	if os.Getenv("TK_BENCH_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
