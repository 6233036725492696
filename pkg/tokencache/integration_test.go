package tokencache_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/internal/redistest"
	"github.com/tokenkeeper/tokenkeeper/internal/tktest/fleet"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

// Short real-time lifetimes for the fake and matching cache timings:
// 3 s tokens, 2 s overlap. A token is usable for 2.7 s (margin 0.3 s) and
// due after 1.7 s (refresh ahead 1 s); a fetch caps what it may invalidate
// to 1.4 s after its send (overlap - margin - near max age).
const (
	lifetime = 3 * time.Second
	grace    = 2 * time.Second
	dueAfter = 1700 * time.Millisecond
	appID    = "wxherd"
	secret   = "herd-secret-0123456789abcdef"
)

func cacheOptions() []tokencache.Option {
	return []tokencache.Option{
		tokencache.WithOverlap(grace),
		tokencache.WithMargin(300 * time.Millisecond),
		tokencache.WithNearMaxAge(300 * time.Millisecond),
		tokencache.WithRefreshAhead(time.Second),
		tokencache.WithLockTTL(1500 * time.Millisecond),
		tokencache.WithFetchTimeout(time.Second),
		tokencache.WithBackoff(100*time.Millisecond, time.Second),
	}
}

// hookedSource wraps the real client so a test can stall a fetch before it
// is sent or after its reply came back.
type hookedSource struct {
	inner  *wechat.Source
	calls  atomic.Int64
	before func(call int64) // may block; ctx is ignored on purpose (a frozen process)
	after  func(call int64)
}

func (s *hookedSource) Fetch(ctx context.Context, app string) (wechat.Token, error) {
	n := s.calls.Add(1)
	if s.before != nil {
		s.before(n)
		ctx = context.WithoutCancel(ctx) // a frozen process sends whatever its deadline said
	}
	tok, err := s.inner.Fetch(ctx, app)
	if s.after != nil {
		s.after(n)
	}
	return tok, err
}

// herd is processes of one classic app sharing a real redis-server and a
// fake WeChat with short lifetimes.
type herd struct {
	*fleet.Fleet
	t     *testing.T
	fake  *wechattest.Server
	redis *redistest.Server
	src   *hookedSource
}

func newHerd(t *testing.T, instances int) *herd {
	t.Helper()
	h := &herd{t: t, redis: redistest.Start(t)}
	h.fake = wechattest.New(t, wechattest.WithApp(appID, secret), wechattest.WithLifetime(lifetime), wechattest.WithGrace(grace))
	h.Fleet = fleet.New(t, h.fake, appID)
	client := wechat.NewClient(wechat.WithBaseURL(h.fake.URL()))
	inner, err := wechat.NewSource(client, wechat.App{ID: appID, Secret: secret, Mode: wechat.Classic})
	if err != nil {
		t.Fatal(err)
	}
	h.src = &hookedSource{inner: inner}
	for i := 0; i < instances; i++ {
		rdb := redis.NewClient(&redis.Options{Addr: h.redis.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
		t.Cleanup(func() { _ = rdb.Close() })
		h.Add(tokencache.New(rdb, h.src, cacheOptions()...))
	}
	return h
}

// assertFetches states the fetch accounting: every token minted upstream was
// stored as a version, except wasted ones, each caused by the fault.
func (h *herd) assertFetches(wasted int) {
	h.t.Helper()
	st := h.fake.Stats(appID)
	rec, found, err := h.Caches[0].Admin().Peek(context.Background(), appID)
	if err != nil || !found {
		h.t.Fatalf("peek: %v %v", found, err)
	}
	if int64(st.Minted) != rec.Version+int64(wasted) {
		h.t.Errorf("minted %d, stored %d versions: want exactly %d fetch(es) wasted by the fault", st.Minted, rec.Version, wasted)
	}
}

func TestHerdFetchesOncePerRefresh(t *testing.T) {
	h := newHerd(t, 20)
	start := time.Now()
	h.Run(4*time.Second, 20, 150*time.Millisecond, nil)
	elapsed := time.Since(start)

	st := h.fake.Stats(appID)
	// One fetch at cold start and one per refresh window (1.7 s) after it.
	// Exactly one of each across 400 goroutines in 20 processes: no fetch is
	// wasted, so every token minted is a version that was stored.
	minRotations := int(elapsed / dueAfter)
	if st.Minted < 1+minRotations-1 || st.Minted > 1+minRotations+1 {
		t.Errorf("minted %d tokens in %v, want 1 + %d±1", st.Minted, elapsed, minRotations)
	}
	rec, found, err := h.Caches[0].Admin().Peek(context.Background(), appID)
	if err != nil || !found {
		t.Fatalf("peek: %v %v", found, err)
	}
	if int64(st.Minted) != rec.Version || h.Refused() != 0 {
		t.Errorf("minted %d, stored versions %d, refused writes %d: a fetch was wasted", st.Minted, rec.Version, h.Refused())
	}
	if n := h.TokenErrs.Load(); n != 0 {
		t.Errorf("%d callers got an error, e.g. %v", n, h.ErrSamples())
	}
	h.AssertNoDeadToken()
	t.Logf("%v: minted %d, business ok %d", elapsed.Round(time.Millisecond), st.Minted, st.BusinessOK)

	// Now let the token expire with nobody asking, and bring all 400 back
	// at once: one fetch.
	for {
		if _, found, err := h.Caches[0].Admin().Peek(context.Background(), appID); err == nil && !found {
			break
		}
		time.Sleep(20 * time.Millisecond) // waiting for Redis to expire the key
	}
	before := h.fake.Stats(appID).Minted
	h.Concurrently(20, h.Call)
	if n := h.fake.Stats(appID).Minted - before; n != 1 || h.TokenErrs.Load() != 0 {
		t.Errorf("after expiry: %d fetches for 400 callers (want 1), %d errors %v", n, h.TokenErrs.Load(), h.ErrSamples())
	}
	h.AssertNoDeadToken()
}

// A lock holder frozen before it sends, past the lock's expiry, then sending
// anyway (the worst case: its deadline check passed just before it froze).
func TestStalledLockHolderBeforeFetch(t *testing.T) { testStalledLockHolder(t, true) }

// A lock holder whose reply came back, frozen before it writes.
func TestStalledLockHolderAfterFetch(t *testing.T) { testStalledLockHolder(t, false) }

// testStalledLockHolder freezes the holder of the first refresh's lock,
// before its fetch is sent or after its reply came back, past the lock TTL
// (1.5 s), so another process takes over; then thaws it.
func testStalledLockHolder(t *testing.T, beforeSend bool) {
	h := newHerd(t, 3)
	release := make(chan struct{})
	stalled := make(chan struct{})
	stall := func(n int64) {
		if n == 2 { // the first refresh
			close(stalled)
			<-release
		}
	}
	if beforeSend {
		h.src.before = stall
	} else {
		h.src.after = stall
	}
	done := make(chan struct{})
	go func() { h.Run(7*time.Second, 5, 50*time.Millisecond, nil); close(done) }()
	<-stalled
	time.Sleep(2 * time.Second) // the fault itself: a frozen process, not synchronization
	close(release)
	<-done
	st := h.fake.Stats(appID)
	h.AssertNoDeadToken()
	h.assertFetches(1) // the frozen holder's token, refused at its write
	if h.Refused() != 1 {
		t.Errorf("refused writes = %d, want 1 (the frozen holder)", h.Refused())
	}
	t.Logf("minted %d, business ok %d, reader errors %d", st.Minted, st.BusinessOK, h.TokenErrs.Load())
}

func TestLostUpstreamReply(t *testing.T) {
	h := newHerd(t, 3)
	lost := make(chan struct{})
	h.src.before = func(n int64) {
		if n == 2 {
			h.fake.InjectFault(wechattest.Fault{Kind: wechattest.FaultLostReply, AppID: appID})
			close(lost)
		}
	}
	h.Run(6*time.Second, 5, 50*time.Millisecond, nil)
	<-lost
	h.AssertNoDeadToken()
	st := h.fake.Stats(appID)
	rec, _, _ := h.Caches[0].Admin().Peek(context.Background(), appID)
	// Every mint but the lost one was stored.
	if int64(st.Minted) != rec.Version+1 {
		t.Errorf("minted %d, stored %d versions: want exactly one unstored (the lost reply)", st.Minted, rec.Version)
	}
	t.Logf("minted %d, reader errors %d", st.Minted, h.TokenErrs.Load())
}

func TestRedisRestartLosingAllData(t *testing.T) {
	h := newHerd(t, 3)
	done := make(chan struct{})
	go func() { h.Run(6*time.Second, 5, 50*time.Millisecond, nil); close(done) }()
	time.Sleep(2500 * time.Millisecond) // let it reach steady state: the schedule of the fault
	before := h.fake.Stats(appID).Minted
	h.redis.Restart()
	<-done
	h.AssertNoDeadToken()
	st := h.fake.Stats(appID)
	rec, _, _ := h.Caches[0].Admin().Peek(context.Background(), appID)
	// After the restart the versions start again at 1, and every mint after
	// it was stored once.
	if int64(st.Minted-before) != rec.Version {
		t.Errorf("after the restart: minted %d, stored %d versions", st.Minted-before, rec.Version)
	}
	t.Logf("minted %d (%d before the restart), reader errors %d", st.Minted, before, h.TokenErrs.Load())
}

func TestRedisOutageWhileTokenIsValid(t *testing.T) {
	h := newHerd(t, 3)
	done := make(chan struct{})
	go func() { h.Run(5*time.Second, 5, 50*time.Millisecond, nil); close(done) }()
	// Take Redis away right after a fresh token is stored: it stays usable
	// for 2.7 s, longer than the outage.
	waitForVersion(t, h.Caches[0], 2)
	before := h.fake.Stats(appID).Minted
	errsBefore := h.TokenErrs.Load()
	if err := h.redis.StopKeepingData(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the outage itself
	during := h.fake.Stats(appID).Minted - before
	errsDuring := h.TokenErrs.Load() - errsBefore
	if err := h.redis.Resume(); err != nil {
		t.Fatal(err)
	}
	<-done
	h.AssertNoDeadToken()
	h.assertFetches(0)
	if during != 0 {
		t.Errorf("%d upstream fetches during the outage: a Redis error was taken for a miss", during)
	}
	if errsDuring != 0 {
		t.Errorf("%d reader errors during the outage while the token was valid", errsDuring)
	}
}

func waitForVersion(t *testing.T, c *tokencache.Cache, v int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		tok, found, err := c.Admin().Peek(context.Background(), appID)
		if err == nil && found && tok.Version >= v {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("version %d never stored", v)
		}
		time.Sleep(5 * time.Millisecond) // polling Redis for a state another process makes
	}
}

// Waiters must be woken by the holder's announcement, never wait out the
// lock: with a one-minute lock and callers that give up after 5 s, a single
// missed wake-up is a caller error. (A waiter that took the change channel
// after the announcement arrived, and then failed TryLock because the holder
// had not released yet, used to sleep for the lock's whole TTL.)
func TestWaitersAreWokenNotTimedOut(t *testing.T) {
	redisSrv := redistest.Start(t)
	fake := wechattest.New(t, wechattest.WithApp(appID, secret))
	src, err := wechat.NewSource(wechat.NewClient(wechat.WithBaseURL(fake.URL())), wechat.App{ID: appID, Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	var caches []*tokencache.Cache
	var admin *redis.Client
	for i := 0; i < 20; i++ {
		rdb := redis.NewClient(&redis.Options{Addr: redisSrv.Addr()})
		t.Cleanup(func() { _ = rdb.Close() })
		c, err := tokencache.New(rdb, src, tokencache.WithLockTTL(time.Minute), tokencache.WithFetchTimeout(30*time.Second),
			tokencache.WithPassiveRefreshLimit(0, 0, 0)) // its rounds of passive refreshes come faster than any real fleet's
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		caches, admin = append(caches, c), rdb
	}
	ctx := context.Background()
	const rounds = 8
	for round := 0; round < rounds; round++ {
		cur, err := caches[0].Token(ctx, appID)
		if err != nil {
			t.Fatal(err)
		}
		admin.Del(ctx, "tokenkeeper:{"+appID+"}:token")
		var wg sync.WaitGroup
		for i := 0; i < 400; i++ {
			wg.Add(1)
			go func(c *tokencache.Cache) {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if _, err := c.Invalidate(ctx, appID, cur.Value); err != nil {
					t.Errorf("round %d: %v", round, err)
				}
			}(caches[i%len(caches)])
		}
		wg.Wait()
		if t.Failed() {
			return
		}
	}
	if n := fake.Stats(appID).Minted; n != 1+rounds {
		t.Fatalf("upstream fetches = %d, want %d (1 + one per round)", n, 1+rounds)
	}
}
