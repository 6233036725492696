package tokencache_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"runtime"
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
	src   tokencache.Source
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
	return e.cacheOn(b, &redis.Options{Addr: e.redis.Addr()}, nil, opts...)
}

// cacheOn builds a primed cache on a client with options o (and hook, if
// not nil). It returns once
// the cache's subscription is confirmed and its near copy taken after it:
// the first subscription marks every copy "confirm before use", so a copy
// taken before it would cost the first measured call a read of Redis.
func (e *benchEnv) cacheOn(b *testing.B, o *redis.Options, hook redis.Hook, opts ...tokencache.Option) (*tokencache.Cache, *redis.Client) {
	b.Helper()
	rdb := redis.NewClient(o)
	if hook != nil {
		rdb.AddHook(hook)
	}
	b.Cleanup(func() { _ = rdb.Close() })
	c, err := tokencache.New(rdb, e.src, append([]tokencache.Option{tokencache.WithDailyBudget(0), tokencache.WithLogger(benchLogger())}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	deadline := time.Now().Add(10 * time.Second)
	for c.Admin().Stats().SubscriptionGaps == 0 {
		if time.Now().After(deadline) {
			b.Fatal("cache not subscribed after 10s")
		}
		time.Sleep(time.Millisecond) // the listener has no signal of its own
	}
	if _, err := c.Token(context.Background(), appID); err != nil {
		b.Fatal(err)
	}
	return c, rdb
}

const recordKey = "tokenkeeper:{" + appID + "}:token"

// floorEntry and floorCopy are the least a lock-free hit can do: one clock
// reading, one atomic load of a pointer every reader shares, one
// comparison. floorHit is the floor the near-hit benchmarks are held to.
type floorEntry struct{ until time.Time }

var floorCopy atomic.Pointer[floorEntry]

func init() { floorCopy.Store(&floorEntry{until: time.Now().Add(24 * time.Hour)}) }

func floorHit() bool { return time.Now().Before(floorCopy.Load().until) }

// serialFloor times n floor hits on one goroutine.
func serialFloor(n int) time.Duration {
	start := time.Now()
	for i := 0; i < n; i++ {
		if !floorHit() {
			panic("floor")
		}
	}
	return time.Since(start) / time.Duration(max(n, 1))
}

// reportFloor reports the floor measured around a benchmark (before and
// after, averaged: the machine is shared) and the ratio of b's ns/op to it.
// b's timer must be stopped.
func reportFloor(b *testing.B, elapsed time.Duration, before, after time.Duration) {
	floor := (before + after) / 2
	perOp := float64(elapsed) / float64(max(b.N, 1))
	b.ReportMetric(float64(floor), "floor-ns/op")
	b.ReportMetric(perOp/float64(floor), "x-floor")
}

// BenchmarkToken compares, on one real Redis in one run: a near-cache hit,
// a Token call with the near cache off (GET + decode), and the baseline, a
// raw go-redis GET of the same key; then parallel hits, with and without a
// background revalidation in flight, against the floor of a lock-free hit
// (floorHit), measured in the same sub-benchmark. The goals: near-hit
// at most 100 ns and 0 allocs; near-hit-parallel within 1.5x of its floor.
func BenchmarkToken(b *testing.B) {
	e := newBenchEnv(b)
	ctx := context.Background()
	b.Run("near-hit", func(b *testing.B) {
		c, _ := e.cache(b)
		before := serialFloor(b.N)
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
		for i := 0; i < b.N; i++ {
			if _, err := c.Token(ctx, appID); err != nil {
				b.Fatal(err)
			}
		}
		elapsed := time.Since(start)
		b.StopTimer()
		reportFloor(b, elapsed, before, serialFloor(b.N))
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
		b.ReportAllocs()
		for b.Loop() {
			if err := rdb.Get(ctx, recordKey).Err(); err != nil {
				b.Fatal(err)
			}
		}
	})
	parallelHits := func(b *testing.B, c *tokencache.Cache) {
		before := parallelFloor(b.N, floorHit)
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := c.Token(ctx, appID); err != nil {
					b.Error(err)
					return
				}
			}
		})
		elapsed := time.Since(start)
		b.StopTimer()
		reportFloor(b, elapsed, before, parallelFloor(b.N, floorHit))
	}
	b.Run("near-hit-parallel", func(b *testing.B) {
		c, _ := e.cache(b)
		parallelHits(b, c)
	})
	// Every hit past the copy's revalidation time, while the one background
	// read is in flight (Redis frozen, so it stays in flight), tries to
	// start another: what parallel hits cost during a freeze.
	b.Run("near-hit-parallel-revalidating", func(b *testing.B) {
		probe := &getProbe{key: recordKey}
		o := &redis.Options{Addr: e.redis.Addr(), ReadTimeout: time.Minute, WriteTimeout: time.Minute, MaxRetries: -1}
		c, _ := e.cacheOn(b, o, probe, tokencache.WithNearMaxAge(20*time.Millisecond))
		if err := e.redis.Freeze(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = e.redis.Thaw() }) // before the cache's Close: its read must return
		deadline := time.Now().Add(10 * time.Second)
		for probe.inflight.Load() == 0 {
			if time.Now().After(deadline) {
				b.Fatal("no background read in flight after 10s")
			}
			if _, err := c.Token(ctx, appID); err != nil {
				b.Fatal(err)
			}
			time.Sleep(time.Millisecond)
		}
		parallelHits(b, c)
		if n := probe.inflight.Load(); n != 1 {
			b.Fatalf("%d reads in flight at the end, want the one background read", n)
		}
		if probe.fromCallers.Load() != 0 {
			b.Fatal("a caller read Redis")
		}
	})
	b.Run("floor-clock+load", func(b *testing.B) {
		for b.Loop() {
			if !floorHit() {
				b.Fatal("floor")
			}
		}
	})
	b.Run("floor-clock+load-parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if !floorHit() {
					b.Error("floor")
					return
				}
			}
		})
	})
	b.Run("floor-atomic-load-parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if floorCopy.Load() == nil {
					b.Error("floor")
					return
				}
			}
		})
	})
	b.Run("floor-monotonic-clock", func(b *testing.B) {
		base := time.Now()
		for b.Loop() {
			if time.Since(base) < 0 {
				b.Fatal("clock")
			}
		}
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
		// No fleet-wide rate of passive refreshes: every iteration is one,
		// and what is measured is how many fetches one herd costs.
		c, rdb := e.cache(b, tokencache.WithPassiveRefreshLimit(0, time.Minute, 0))
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

// latencyReaders is how many goroutines the latency benchmarks read from.
// Each yields after every call, as a server's handlers block on their own
// I/O: a reader preempted inside a call then waits for its P a few
// microseconds, not for the 10 ms time slices of tight loops on every P,
// and the cache's own goroutines (the listener, background reads) and the
// benchmark's (rotator, freezer) run when they are woken. Tight loops on
// every P would measure the Go scheduler's starvation, not the cache.
func latencyReaders() int { return 2 * runtime.GOMAXPROCS(0) }

// readLatencies runs op b.N times from latencyReaders goroutines and returns
// the merged latency histogram: the timed part of a latency benchmark.
func readLatencies(b *testing.B, op func() error) *latencies {
	var (
		sink    latencySink
		claimed atomic.Int64
		wg      sync.WaitGroup
	)
	const chunk = 256 // claimed at a time: the shared counter stays off the hot path
	b.ReportAllocs()
	b.ResetTimer()
	for range latencyReaders() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := new(latencies)
			defer sink.add(h)
			for {
				from := claimed.Add(chunk) - chunk
				if from >= int64(b.N) {
					return
				}
				for i := from; i < min(from+chunk, int64(b.N)); i++ {
					t0 := time.Now()
					err := op()
					h.add(time.Since(t0))
					if err != nil {
						b.Error(err)
						return
					}
					runtime.Gosched()
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	return &sink.all
}

// readTokens is readLatencies of Token(appID) on c.
func readTokens(b *testing.B, c *tokencache.Cache) *latencies {
	ctx := readerContext()
	return readLatencies(b, func() error {
		_, err := c.Token(ctx, appID)
		return err
	})
}

// BenchmarkLatencyHarnessFloor is the latency benchmarks' harness around
// floorHit (a clock reading and an atomic load, no cache): the tail it
// reports is the machine's and the Go scheduler's, the floor of every
// latency figure below.
func BenchmarkLatencyHarnessFloor(b *testing.B) {
	h := readLatencies(b, func() error {
		if !floorHit() {
			return errors.New("floor")
		}
		return nil
	})
	h.report(b)
}

// BenchmarkTokenLatencyDuringRotation measures Token() while the token is
// really replaced, back to back (every 50 ms at most): the rotator revokes
// the current token at the fake WeChat and reports it, so each Invalidate
// verifies it dead and stores a new one, and each replacement makes every
// near copy "confirm before use". With Redis on loopback and 5 ms away
// (a proxy delays every byte 2.5 ms each way, commands and announcements
// alike). Reported: percentiles of the latency a reader sees (the goal:
// p99.99 at most 1 ms), how many calls took 1 ms or more, rotations, and
// the reader's near misses per rotation (the calls that read Redis).
func BenchmarkTokenLatencyDuringRotation(b *testing.B) {
	e := newBenchEnv(b)
	for _, tc := range []struct {
		name   string
		oneWay time.Duration
		// wechat delays every fetch of the rotator; nearMaxAge, if set, is
		// the reader's, short so that a run crosses many revalidations.
		wechat, nearMaxAge time.Duration
	}{
		{name: "redis-local"},
		{name: "redis-5ms", oneWay: 2500 * time.Microsecond},
		{name: "redis-5ms-wechat-200ms-near-100ms", oneWay: 2500 * time.Microsecond, wechat: 200 * time.Millisecond, nearMaxAge: 100 * time.Millisecond},
	} {
		b.Run(tc.name, func(b *testing.B) {
			addr := e.redis.Addr()
			if tc.oneWay > 0 {
				addr = startDelayProxy(b, addr, tc.oneWay).Addr()
			}
			var readerOpts []tokencache.Option
			if tc.nearMaxAge > 0 {
				readerOpts = append(readerOpts, tokencache.WithNearMaxAge(tc.nearMaxAge))
			}
			reader, _ := e.cacheOn(b, &redis.Options{Addr: addr}, nil, readerOpts...)
			rotatorOpts := []tokencache.Option{tokencache.WithPassiveRefreshLimit(0, time.Minute, 0)}
			rotatorEnv := e
			if tc.wechat > 0 {
				slow := *e
				slow.src = slowSource{e.src, tc.wechat}
				rotatorEnv = &slow
			}
			rotator, _ := rotatorEnv.cacheOn(b, &redis.Options{Addr: addr}, nil, rotatorOpts...)
			ctx := context.Background()
			stop, done := make(chan struct{}), make(chan struct{})
			var rotations, rotateErrs atomic.Int64
			go func() {
				defer close(done)
				t := time.NewTicker(50 * time.Millisecond)
				defer t.Stop()
				for {
					select {
					case <-stop:
						return
					case <-t.C:
					}
					cur := e.fake.CurrentToken(appID)
					e.fake.Revoke(appID, cur)
					next, err := rotator.Invalidate(ctx, appID, cur)
					if err != nil || next.Value == cur {
						rotateErrs.Add(1)
						continue
					}
					rotations.Add(1)
				}
			}()
			s0 := reader.Admin().Stats()
			h := readTokens(b, reader)
			close(stop)
			<-done
			s1 := reader.Admin().Stats()
			h.report(b)
			n := rotations.Load()
			b.ReportMetric(float64(n), "rotations")
			b.ReportMetric(float64(s1.NearMisses-s0.NearMisses)/float64(max(n, 1)), "misses/rotation")
			if rotateErrs.Load() > 0 {
				b.Logf("%d rotations failed", rotateErrs.Load())
			}
			if s1.Fetches != s0.Fetches {
				b.Errorf("the reader fetched %d times", s1.Fetches-s0.Fetches)
			}
		})
	}
}

// BenchmarkTokenAcrossRedisFreeze measures Token() from parallel readers
// while redis-server is frozen (SIGSTOP) 300 ms of every 400 ms, with a
// 100 ms near max age: nearly every background revalidation is sent to a
// frozen server.
//   - reads-hang: the refresher's client options (1 s timeouts, 3 retries):
//     each background read waits the freeze out;
//   - reads-time-out: 50 ms timeouts, 1 retry: background reads fail during
//     the freeze, and the copy serves on.
//
// Reported: percentiles of Token() (the goal: p99.99 at most 1 ms), the
// part of the measured time Redis was frozen, and what the cache did:
// revalidations, failed revalidations, near misses (calls that went to
// Redis: the goal is 0).
func BenchmarkTokenAcrossRedisFreeze(b *testing.B) {
	e := newBenchEnv(b)
	const up, frozen = 100 * time.Millisecond, 300 * time.Millisecond
	for _, tc := range []struct {
		name  string
		tweak func(*redis.Options)
	}{
		{"reads-hang", func(*redis.Options) {}},
		{"reads-time-out", func(o *redis.Options) {
			o.ReadTimeout, o.WriteTimeout, o.DialTimeout, o.MaxRetries = 50*time.Millisecond, 50*time.Millisecond, 50*time.Millisecond, 1
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			o := refresherRedisOptions(e.redis.Addr())
			tc.tweak(o)
			probe := &getProbe{key: recordKey}
			c, _ := e.cacheOn(b, o, probe, tokencache.WithNearMaxAge(100*time.Millisecond))

			type interval struct{ from, to time.Time }
			var (
				mu      sync.Mutex
				freezes []interval
			)
			stop, done := make(chan struct{}), make(chan struct{})
			go func() {
				defer close(done)
				for {
					select {
					case <-stop:
						return
					case <-time.After(up):
					}
					if err := e.redis.Freeze(); err != nil {
						b.Error(err)
						return
					}
					from := time.Now()
					select {
					case <-stop:
					case <-time.After(frozen):
					}
					_ = e.redis.Thaw()
					mu.Lock()
					freezes = append(freezes, interval{from, time.Now()})
					mu.Unlock()
					select {
					case <-stop:
						return
					default:
					}
				}
			}()
			s0 := c.Admin().Stats()
			start := time.Now()
			h := readTokens(b, c)
			end := time.Now()
			s1 := c.Admin().Stats()
			close(stop)
			<-done

			var frozenFor time.Duration
			for _, iv := range freezes {
				if from, to := later(iv.from, start), earlier(iv.to, end); to.After(from) {
					frozenFor += to.Sub(from)
				}
			}
			h.report(b)
			b.ReportMetric(100*float64(frozenFor)/float64(end.Sub(start)), "frozen-%")
			b.ReportMetric(float64(s1.Revalidations-s0.Revalidations), "revalidations")
			b.ReportMetric(float64(s1.RevalidationErrors-s0.RevalidationErrors), "reval-errors")
			b.ReportMetric(float64(s1.NearMisses-s0.NearMisses), "near-misses")
			if n := probe.fromCallers.Load(); n != 0 {
				b.Errorf("%d GETs of the record sent on a caller's context", n)
			}
			if n := probe.maxInflight.Load(); n > 1 {
				b.Errorf("%d GETs of the record in flight at once", n)
			}
		})
	}
}

// slowSource is a WeChat that far away: every fetch waits delay first.
type slowSource struct {
	tokencache.Source
	delay time.Duration
}

func (s slowSource) Fetch(ctx context.Context, appID string) (wechat.Token, error) {
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return wechat.Token{}, ctx.Err()
	}
	return s.Source.Fetch(ctx, appID)
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func benchLogger() *slog.Logger {
	if os.Getenv("TK_BENCH_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
