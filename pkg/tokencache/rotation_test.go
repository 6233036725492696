package tokencache_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/internal/tktest"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

// slowRecordGETs is a getProbe that also holds every GET of the record sent
// on a caller's context for delay before sending it: a Redis that far away,
// for the callers only.
type slowRecordGETs struct {
	getProbe
	delay time.Duration
}

func (p *slowRecordGETs) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	probe := p.getProbe.ProcessHook(next)
	return func(ctx context.Context, cmd redis.Cmder) error {
		if args := cmd.Args(); cmd.Name() == "get" && len(args) == 2 && args[1] == p.key && ctx.Value(readerMark{}) != nil {
			time.Sleep(p.delay)
		}
		return probe(ctx, cmd)
	}
}

// TestRotationReadsRedisOncePerProcess: when another process replaces the
// token, the announcement makes this process's copy "confirm before use".
// However many callers then ask for the token at once, this process should
// send one GET of the record, not one per caller: with Redis a few ms away
// and hundreds of handler goroutines, one GET each empties the client's
// pool (10 connections per CPU) and queues callers behind one another, so
// every rotation becomes a tail of pool waits.
//
// The callers may be answered with the new token (they waited for the one
// read) or with the superseded one (served while the read runs): both are
// live, the superseded one for the overlap after the new one's fetch.
func TestRotationReadsRedisOncePerProcess(t *testing.T) {
	tktest.ForEachBackend(t, func(t *testing.T, b *tktest.Backend) {
		const callers = 32
		fake := wechattest.New(t, wechattest.WithApp(appID, secret))
		src, err := wechat.NewSource(wechat.NewClient(wechat.WithBaseURL(fake.URL())), wechat.App{ID: appID, Secret: secret})
		if err != nil {
			t.Fatal(err)
		}
		probe := &slowRecordGETs{getProbe: getProbe{key: "tokenkeeper:{" + appID + "}:token"}, delay: 50 * time.Millisecond}
		// The go-redis options the refresher builds from its configuration.
		rdb := b.ClientWith(func(o *redis.UniversalOptions) { *o = *(&config.Config{}).RedisOptions() })
		rdb.AddHook(probe)
		changed := make(chan struct{}, 16)
		reader, err := tokencache.New(rdb, src, tokencache.WithDailyBudget(0), tokencache.WithHooks(tokencache.Hooks{
			OnChange: func(string) {
				select {
				case changed <- struct{}{}:
				default:
				}
			},
		}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = reader.Close() })
		rotatorRDB := b.Client()
		rotator, err := tokencache.New(rotatorRDB, src, tokencache.WithDailyBudget(0), tokencache.WithPassiveRefreshLimit(0, time.Minute, 0))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = rotator.Close() })

		ctx := context.Background()
		for reader.Admin().Stats().SubscriptionGaps == 0 {
			time.Sleep(time.Millisecond) // the listener has no signal of its own
		}
		old, err := reader.Token(ctx, appID)
		if err != nil {
			t.Fatal(err)
		}

		// Another process replaces the token (it was revoked at WeChat and
		// reported), and this one hears of it.
		for len(changed) > 0 {
			<-changed
		}
		fake.Revoke(appID, old.Value)
		next, err := rotator.Invalidate(ctx, appID, old.Value)
		if err != nil || next.Value == old.Value {
			t.Fatalf("rotation: %v (same token: %v)", err, next.Value == old.Value)
		}
		// Invalidate published the rotation's announcements before it
		// returned; wait until they have been applied here (quiet for 200 ms).
		// Had they not been, the callers would hit the old copy and send
		// nothing: the near misses below prove they had.
		select {
		case <-changed:
		case <-time.After(10 * time.Second):
			t.Fatal("the reader heard of no change within 10s")
		}
		for quiet := false; !quiet; {
			select {
			case <-changed:
			case <-time.After(200 * time.Millisecond):
				quiet = true
			}
		}

		before := reader.Admin().Stats()
		probe.fromCallers.Store(0)
		probe.maxInflight.Store(0)
		start := make(chan struct{})
		var wg sync.WaitGroup
		errs := make(chan error, callers)
		rctx := readerContext()
		for range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				tok, err := reader.Token(rctx, appID)
				if err == nil && tok.Value != next.Value && tok.Value != old.Value {
					err = context.DeadlineExceeded
				}
				if err != nil {
					errs <- err
				}
			}()
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("Token: %v", err)
		}
		after := reader.Admin().Stats()
		t.Logf("%d callers: %d near misses, %d GETs of the record from callers, at most %d in flight",
			callers, after.NearMisses-before.NearMisses, probe.fromCallers.Load(), probe.maxInflight.Load())
		if after.NearMisses == before.NearMisses {
			t.Fatal("no caller missed the near copy: the rotation was not applied before the callers came")
		}
		if n := probe.fromCallers.Load(); n > 1 {
			t.Errorf("%d callers sent %d GETs of the record after one rotation, want at most one per process", callers, n)
		}
	})
}
