package tokencache

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/testlog"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// verifyingSource is a scriptedSource that can also ask "WeChat" whether a
// token is alive: dead lists the tokens it refuses.
type verifyingSource struct {
	*scriptedSource
	mu     sync.Mutex
	dead   map[string]bool
	checks int
}

func (v *verifyingSource) Verify(_ context.Context, _, token string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.checks++
	if v.dead[token] {
		return &wechat.Error{Code: 40001, Endpoint: wechat.EndpointDomainIP}
	}
	return nil
}

func (v *verifyingSource) kill(tok string) {
	v.mu.Lock()
	v.dead[tok] = true
	v.mu.Unlock()
}

func (v *verifyingSource) Checks() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.checks
}

func newVerifyingFixture(t *testing.T, opts ...Option) (*fixture, *verifyingSource) {
	t.Helper()
	f := newFixture(t)
	v := &verifyingSource{scriptedSource: f.src, dead: map[string]bool{}}
	c, err := New(f.rdb, v, append([]Option{WithClock(f.clock.Now), WithBackoff(time.Second, 8*time.Second)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	f.cache = c
	return f, v
}

// Any API key looping "take the token, report it" must not cost a mint:
// WeChat is asked, once for the whole fleet, and says the token is alive.
func TestReportOfALiveTokenCostsNoFetch(t *testing.T) {
	f, v := newVerifyingFixture(t)
	tok := mustToken(t, f.cache, "wx1")
	for i := 0; i < 50; i++ {
		got, err := f.cache.Invalidate(context.Background(), "wx1", tok.Value)
		if err != nil || got.Value != tok.Value {
			t.Fatalf("report %d of a live token: %v, %v; want it kept", i, got, err)
		}
	}
	if n := f.src.Calls(); n != 1 {
		t.Fatalf("upstream fetches = %d, want 1 (reports of a live token cost none)", n)
	}
	if n := v.Checks(); n != 1 {
		t.Fatalf("WeChat was asked %d times, want 1: the verdict is shared", n)
	}
	if s := f.cache.Admin().Stats(); s.InvalidationsRefuted != 50 {
		t.Fatalf("InvalidationsRefuted = %d, want 50", s.InvalidationsRefuted)
	}
	// Once WeChat refuses it, one report replaces it.
	v.kill(tok.Value)
	f.clock.Advance(2 * verdictAliveTTL)
	got, err := f.cache.Invalidate(context.Background(), "wx1", tok.Value)
	if err != nil || got.Value == tok.Value || f.src.Calls() != 2 {
		t.Fatalf("report of a dead token: %v, %v, fetches %d; want one new token", got, err, f.src.Calls())
	}
}

// Junk (a token that is not the current one) never consumes the passive
// refresh allowance, so a hostile key cannot starve legitimate reports.
func TestJunkReportsNeverConsumeTheAllowance(t *testing.T) {
	f, v := newVerifyingFixture(t, WithPassiveRefreshLimit(1, time.Minute, 0))
	tok := mustToken(t, f.cache, "wx1")
	for i := 0; i < 100; i++ {
		if got, err := f.cache.Invalidate(context.Background(), "wx1", "junk-"+strings.Repeat("x", i)); err != nil || got.Value != tok.Value {
			t.Fatalf("junk report: %v, %v", got, err)
		}
	}
	if v.Checks() != 0 || f.src.Calls() != 1 {
		t.Fatalf("junk cost %d checks and %d fetches, want none", v.Checks(), f.src.Calls()-1)
	}
	v.kill(tok.Value)
	if got, err := f.cache.Invalidate(context.Background(), "wx1", tok.Value); err != nil || got.Value == tok.Value {
		t.Fatalf("the legitimate report after the junk: %v, %v", got, err)
	}
}

// Passive refreshes are counted in Redis, by every process together.
func TestPassiveRefreshesAreRateLimitedFleetWide(t *testing.T) {
	f, v := newVerifyingFixture(t, WithPassiveRefreshLimit(3, time.Minute, 0))
	other, err := New(f.rdb, v, WithClock(f.clock.Now), WithPassiveRefreshLimit(3, time.Minute, 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Close() })
	tok := mustToken(t, f.cache, "wx1")
	caches := []*Cache{f.cache, other}
	var limited error
	for i := 0; i < 6 && limited == nil; i++ {
		v.kill(tok.Value)
		next, err := caches[i%2].Invalidate(context.Background(), "wx1", tok.Value)
		if err != nil {
			limited = err
			break
		}
		tok = next
	}
	if !errors.Is(limited, ErrPassiveRefreshLimited) {
		t.Fatalf("after 3 passive refreshes from two processes: %v, want ErrPassiveRefreshLimited", limited)
	}
	if n := f.src.Calls(); n != 4 {
		t.Fatalf("upstream fetches = %d, want 4 (the cold start and 3 passive refreshes)", n)
	}
	// A new window allows more.
	f.clock.Advance(time.Minute + time.Second)
	if _, err := other.Invalidate(context.Background(), "wx1", tok.Value); err != nil {
		t.Fatalf("next window: %v", err)
	}
}

// Passive refreshes may not use the budget's reserve: a refresh ahead of
// expiry still can.
func TestPassiveRefreshesLeaveTheSchedulerItsReserve(t *testing.T) {
	f, v := newVerifyingFixture(t, WithDailyBudget(10), WithPassiveRefreshLimit(0, 0, 2))
	tok := mustToken(t, f.cache, "wx1")
	var err error
	for i := 0; i < 10; i++ {
		v.kill(tok.Value)
		var next Token
		if next, err = f.cache.Invalidate(context.Background(), "wx1", tok.Value); err != nil {
			break
		}
		tok = next
	}
	if !errors.Is(err, ErrBudgetExceeded) || !strings.Contains(err.Error(), "kept for scheduled refreshes") {
		t.Fatalf("passive refreshes past the reserve: %v", err)
	}
	if n := f.src.Calls(); n != 8 {
		t.Fatalf("upstream fetches = %d, want 8 (10 less the reserve of 2)", n)
	}
	f.clock.Advance(tok.RefreshAt.Sub(f.clock.Now()))
	if _, err := f.cache.Admin().Refresh(context.Background(), "wx1"); err != nil {
		t.Fatalf("a scheduled refresh inside the reserve: %v", err)
	}
}

// A current token that WeChat refuses before its usable end was killed by a
// fetch outside the fleet (a laptop with the production secret): say so.
func TestTokenKilledOutsideTheFleetIsReported(t *testing.T) {
	var logs testlog.Buffer
	f, v := newVerifyingFixture(t, WithLogger(newTestLogger(&logs)))
	var hooked []string
	f.cache.opt.hooks.OnKilledOutside = func(app string) { hooked = append(hooked, app) }
	tok := mustToken(t, f.cache, "wx1")
	v.kill(tok.Value)
	if _, err := f.cache.Invalidate(context.Background(), "wx1", tok.Value); err != nil {
		t.Fatal(err)
	}
	if s := f.cache.Admin().Stats(); s.KilledOutside != 1 || len(hooked) != 1 {
		t.Fatalf("KilledOutside = %d, hook calls %v; want 1", s.KilledOutside, hooked)
	}
	if !strings.Contains(logs.String(), "killed outside the fleet") {
		t.Fatalf("not logged:\n%s", logs.String())
	}
}

// While Redis refuses writes (a full Redis with noeviction, a lost ACL), a
// report of the current token must never be answered with that token if
// WeChat refused it, and must not drop a copy WeChat still accepts.
func TestReportWhileRedisRefusesWrites(t *testing.T) {
	f, v := newVerifyingFixture(t)
	tok := mustToken(t, f.cache, "wx1")
	f.outage(t)
	// WeChat still accepts it: it keeps serving.
	if got, err := f.cache.Invalidate(context.Background(), "wx1", tok.Value); err != nil || got.Value != tok.Value {
		t.Fatalf("report of a live token during an outage: %v, %v; want it kept", got, err)
	}
	for i := 0; i < 30; i++ {
		if got, err := f.cache.Token(context.Background(), "wx1"); err != nil || got.Value != tok.Value {
			t.Fatalf("read %d after the report: %v, %v", i, got, err)
		}
	}
	// WeChat refuses it: it is never handed out again.
	v.kill(tok.Value)
	f.clock.Advance(2 * verdictAliveTTL)
	if got, err := f.cache.Invalidate(context.Background(), "wx1", tok.Value); err == nil || got.Value == tok.Value {
		t.Fatalf("report of a dead token during an outage: %v, %v; want an error", got, err)
	}
	if got, err := f.cache.Token(context.Background(), "wx1"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Token() after the dead token's report: %v, %v; want ErrUnavailable", got, err)
	}
}

// The same on a real redis-server that is full (maxmemory reached under
// noeviction): reads answer, every write is refused with OOM.
func TestReportWhileRedisIsOutOfMemory(t *testing.T) {
	v := &verifyingSource{scriptedSource: &scriptedSource{}, dead: map[string]bool{}}
	c, rdb := cacheOnRealRedis(t, v)
	ctx := context.Background()
	tok := mustToken(t, c, "wx1")
	if err := rdb.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.ConfigSet(ctx, "maxmemory", "0").Err() })
	v.kill(tok.Value)
	got, err := c.Invalidate(ctx, "wx1", tok.Value)
	if err == nil || got.Value == tok.Value {
		t.Fatalf("report of a dead token while Redis refuses writes: %v, %v; want an error, never the dead token", got, err)
	}
	if !strings.Contains(err.Error(), "OOM") {
		t.Fatalf("the error does not say why: %v", err)
	}
	if got, err := c.Token(ctx, "wx1"); err == nil && got.Value == tok.Value {
		t.Fatalf("Token() after the report handed out the dead token")
	}
}
