package tokencache_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/internal/redistest"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

// readerMark is set on the context of every Token call a test makes: a
// command that carries it was sent from a caller's goroutine, on the
// caller's behalf. The cache's own background reads run on contexts derived
// from the cache's, which never carry it.
type readerMark struct{}

func readerContext() context.Context {
	return context.WithValue(context.Background(), readerMark{}, true)
}

// getProbe is a go-redis hook that watches the GETs of one record key: how
// many are in flight at once (retries included: the hook wraps them), and
// how many were sent on a caller's context.
type getProbe struct {
	key                   string
	inflight, maxInflight atomic.Int64
	fromCallers           atomic.Int64
	background            atomic.Int64
}

func (p *getProbe) DialHook(next redis.DialHook) redis.DialHook { return next }
func (p *getProbe) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (p *getProbe) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		args := cmd.Args()
		if cmd.Name() != "get" || len(args) != 2 || args[1] != p.key {
			return next(ctx, cmd)
		}
		if ctx.Value(readerMark{}) != nil {
			p.fromCallers.Add(1)
		} else {
			p.background.Add(1)
		}
		n := p.inflight.Add(1)
		defer p.inflight.Add(-1)
		for m := p.maxInflight.Load(); n > m && !p.maxInflight.CompareAndSwap(m, n); m = p.maxInflight.Load() {
		}
		return next(ctx, cmd)
	}
}

// refresherRedisOptions are the go-redis options the refresher builds from
// its configuration (internal/config), for a standalone server at addr.
func refresherRedisOptions(addr string) *redis.Options {
	return (&config.Config{Redis: config.Redis{Addrs: []string{addr}}}).RedisOptions().Simple()
}

// TestFrozenRedisNeverBlocksReaders: two processes (two Caches, each with
// its own client) read one app from four goroutines each, with a 1 s near
// max age, while redis-server is frozen by SIGSTOP for 4 s: it keeps its
// connections and answers nothing, so every command waits for its read
// timeout. Every call must return the token at once from the near copy:
//   - no call fails, and every call returns the token stored before;
//   - no call misses the near copy (NearMisses does not move), and no GET of
//     the record is ever sent on a caller's context: callers never wait on
//     Redis;
//   - at most one GET of the record is in flight per process at any time
//     (one background revalidation per app per process);
//   - the freeze was felt: background reads failed during it, and
//     succeeded again after it.
//
// Nothing here measures wall-clock time: "did not wait" is proven by which
// goroutine sent which command.
func TestFrozenRedisNeverBlocksReaders(t *testing.T) {
	for _, tc := range []struct {
		name       string
		maxRetries int
	}{
		{"refresher-options", 0}, // as internal/config builds them: go-redis's 3 retries
		{"max-retries-1", 1},
	} {
		t.Run(tc.name, func(t *testing.T) { testFrozenRedis(t, tc.maxRetries) })
	}
}

func testFrozenRedis(t *testing.T, maxRetries int) {
	const (
		processes = 2
		readers   = 4
		nearMax   = time.Second
		frozenFor = 4 * time.Second
	)
	srv := redistest.Start(t)
	fake := wechattest.New(t, wechattest.WithApp(appID, secret))
	src, err := wechat.NewSource(wechat.NewClient(wechat.WithBaseURL(fake.URL())), wechat.App{ID: appID, Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	key := "tokenkeeper:{" + appID + "}:token"

	type process struct {
		cache *tokencache.Cache
		probe *getProbe
	}
	procs := make([]process, processes)
	for i := range procs {
		o := refresherRedisOptions(srv.Addr())
		if o.DialTimeout != time.Second || o.ReadTimeout != time.Second || o.WriteTimeout != time.Second {
			t.Fatalf("the refresher's redis timeouts changed: dial %v read %v write %v", o.DialTimeout, o.ReadTimeout, o.WriteTimeout)
		}
		if maxRetries != 0 {
			o.MaxRetries = maxRetries
		}
		rdb := redis.NewClient(o)
		t.Cleanup(func() { _ = rdb.Close() })
		p := &getProbe{key: key}
		rdb.AddHook(p)
		c, err := tokencache.New(rdb, src, tokencache.WithNearMaxAge(nearMax), tokencache.WithDailyBudget(0))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		procs[i] = process{c, p}
	}

	// Prime every process, after its subscription is confirmed (the first
	// subscription marks every copy "confirm before use").
	ctx := context.Background()
	var want string
	for i, p := range procs {
		deadline := time.Now().Add(5 * time.Second)
		for p.cache.Admin().Stats().SubscriptionGaps == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("process %d: not subscribed after 5s", i)
			}
			time.Sleep(time.Millisecond) // the listener has no signal of its own
		}
		tok, err := p.cache.Token(ctx, appID)
		if err != nil {
			t.Fatalf("process %d: priming: %v", i, err)
		}
		if want == "" {
			want = tok.Value
		} else if tok.Value != want {
			t.Fatalf("process %d primed with another token", i)
		}
	}
	before := make([]tokencache.Stats, processes)
	for i, p := range procs {
		before[i] = p.cache.Admin().Stats()
		p.probe.maxInflight.Store(p.probe.inflight.Load())
		p.probe.fromCallers.Store(0)
	}

	// Readers: tight loops, every call checked.
	var (
		stop          atomic.Bool
		wg            sync.WaitGroup
		calls, failed atomic.Int64
		errMu         sync.Mutex
		firstErr      error
	)
	rctx := readerContext()
	for _, p := range procs {
		for range readers {
			wg.Add(1)
			go func(c *tokencache.Cache) {
				defer wg.Done()
				for !stop.Load() {
					tok, err := c.Token(rctx, appID)
					calls.Add(1)
					if err == nil && tok.Value != want {
						err = fmt.Errorf("served another token (%s)", wechat.Fingerprint(tok.Value))
					}
					if err != nil {
						failed.Add(1)
						errMu.Lock()
						if firstErr == nil {
							firstErr = err
						}
						errMu.Unlock()
					}
				}
			}(p.cache)
		}
	}
	stopReaders := func() {
		stop.Store(true)
		wg.Wait()
	}
	defer stopReaders()

	// Redis up: background revalidations run (from 3/4 of near max age).
	time.Sleep(2 * nearMax)
	warm := make([]tokencache.Stats, processes)
	for i, p := range procs {
		warm[i] = p.cache.Admin().Stats()
		if warm[i].Revalidations == before[i].Revalidations {
			t.Errorf("process %d: no background revalidation in %v with Redis up", i, 2*nearMax)
		}
	}

	if err := srv.Freeze(); err != nil {
		t.Fatal(err)
	}
	callsAtFreeze := calls.Load()
	time.Sleep(frozenFor)
	frozen := make([]tokencache.Stats, processes)
	for i, p := range procs {
		frozen[i] = p.cache.Admin().Stats()
	}
	callsDuringFreeze := calls.Load() - callsAtFreeze
	if err := srv.Thaw(); err != nil {
		t.Fatal(err)
	}

	// Redis back: revalidations succeed again. The last failed one waits
	// revalidateRetry (1 s) before the next try; allow a few.
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; i < processes; {
		if procs[i].cache.Admin().Stats().Revalidations > frozen[i].Revalidations {
			i++
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d: no successful revalidation within 10s of the thaw", i)
		}
		time.Sleep(10 * time.Millisecond)
	}
	stopReaders()

	t.Logf("%d calls, %d during the %v freeze", calls.Load(), callsDuringFreeze, frozenFor)
	if failed.Load() > 0 {
		t.Errorf("%d of %d Token calls failed; first: %v", failed.Load(), calls.Load(), firstErr)
	}
	if callsDuringFreeze == 0 {
		t.Error("no Token call during the freeze")
	}
	for i, p := range procs {
		end := p.cache.Admin().Stats()
		t.Logf("process %d: revalidations %d→%d→%d→%d, revalidation errors %d→%d→%d, near misses %d→%d, served stale %d→%d; record GETs: %d background, %d from callers, at most %d in flight",
			i, before[i].Revalidations, warm[i].Revalidations, frozen[i].Revalidations, end.Revalidations,
			warm[i].RevalidationErrors, frozen[i].RevalidationErrors, end.RevalidationErrors,
			before[i].NearMisses, end.NearMisses, before[i].ServedStale, end.ServedStale,
			p.probe.background.Load(), p.probe.fromCallers.Load(), p.probe.maxInflight.Load())
		if end.NearMisses != before[i].NearMisses {
			t.Errorf("process %d: %d calls missed the near copy (and went to Redis), %d of them during the freeze",
				i, end.NearMisses-before[i].NearMisses, frozen[i].NearMisses-warm[i].NearMisses)
		}
		if n := p.probe.fromCallers.Load(); n != 0 {
			t.Errorf("process %d: %d GETs of the record were sent from a caller's goroutine: a caller waited on Redis", i, n)
		}
		if n := p.probe.maxInflight.Load(); n > 1 {
			t.Errorf("process %d: %d GETs of the record in flight at once, want at most one background read per app", i, n)
		}
		if end.ServedStale != before[i].ServedStale {
			t.Errorf("process %d: %d calls were answered after a Redis error (a caller read Redis)", i, end.ServedStale-before[i].ServedStale)
		}
		if frozen[i].RevalidationErrors == warm[i].RevalidationErrors {
			t.Errorf("process %d: no background read failed during the %v freeze: the freeze was not felt", i, frozenFor)
		}
		if end.Fetches != before[i].Fetches {
			t.Errorf("process %d: %d upstream fetches during the test", i, end.Fetches-before[i].Fetches)
		}
	}
}
