package scheduler

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// lossySource mints a new token per fetch; while lose is set, every fetch
// fails as a lost reply does: sent, outcome unknown.
type lossySource struct {
	mu     sync.Mutex
	name   string
	minted int
	lose   bool
}

func (s *lossySource) Fetch(ctx context.Context, app string) (wechat.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lose {
		return wechat.Token{}, &wechat.RequestError{Endpoint: wechat.EndpointToken, Sent: true, Err: errors.New("read: connection reset by peer")}
	}
	s.minted++
	return wechat.Token{Value: fmt.Sprintf("%s-tok-%d-abcdefghijklmnop", s.name, s.minted), ExpiresIn: 7200 * time.Second}, nil
}

func (s *lossySource) Minted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.minted
}

// The reproduced bug: another process's passive refresh, whose fetch lost
// its reply, caps the stored token to a few minutes. The leader must learn
// of it (Hooks.OnChange → Changed) and refresh before the capped token's
// usable end, not at the uncapped token's RefreshAt two hours away.
func TestCapByAnotherProcessMovesTheRefreshBeforeTheCappedEnd(t *testing.T) {
	m := miniredis.RunT(t)
	m.SetTime(t0)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { rdb.Close() })
	clock := &fakeClock{now: t0}
	// advance moves miniredis's TTLs first, then the clock (which fires
	// the scheduler's timer if it is due).
	advance := func(to time.Time) {
		if d := to.Sub(clock.Now()); d > 0 {
			m.FastForward(d)
		}
		clock.advanceTo(to)
	}

	var sched atomic.Pointer[Scheduler]
	changes := make(chan string, 16)
	srcA := &lossySource{name: "a"}
	leader, err := tokencache.New(rdb, srcA, tokencache.WithClock(clock.Now), tokencache.WithHooks(tokencache.Hooks{
		OnChange: func(app string) {
			if s := sched.Load(); s != nil {
				s.Changed(app)
			}
			select {
			case changes <- app:
			default:
			}
		},
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { leader.Close() })
	srcB := &lossySource{name: "b", lose: true}
	other, err := tokencache.New(rdb, srcB, tokencache.WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })

	h := startOn(t, clock, Config{Apps: []string{"wxa"}, Refresher: leader.Admin()}, zeroRand)
	sched.Store(h.s)
	first := h.result()
	if first.Class != ClassOK || srcA.Minted() != 1 {
		t.Fatalf("first refresh: %v, minted %d; want ok, 1", first, srcA.Minted())
	}
	if next := h.waitIdle(); !next.Equal(first.Token.RefreshAt) {
		t.Fatalf("idle until %v; want the token's RefreshAt %v", next, first.Token.RefreshAt)
	}
	for len(changes) > 0 {
		<-changes // the leader's own store, if announced late
	}

	// Half an hour later, a business server reports the token to another
	// replica; that replica's fetch loses its reply and caps the token.
	advance(t0.Add(30 * time.Minute))
	if _, err := other.Invalidate(context.Background(), "wxa", first.Token.Value); err == nil {
		t.Fatal("the other process's passive refresh succeeded; want its lost reply")
	}
	capped, found, err := other.Admin().Peek(context.Background(), "wxa")
	if err != nil || !found || capped.Value != first.Token.Value || !capped.UsableUntil.Before(first.Token.UsableUntil) {
		t.Fatalf("after the lost reply the record is %v (found %v, err %v); want %v capped", capped, found, err, first.Token)
	}
	select {
	case <-changes:
	case <-time.After(5 * time.Second):
		t.Fatal("the leader's cache never announced the cap (Hooks.OnChange)")
	}

	var next time.Time
	select {
	case next = <-h.idle:
	case <-time.After(5 * time.Second):
		t.Fatalf("no re-plan within 5s of the cap: the scheduler still sleeps until %v, the capped token is usable only until %v",
			h.s.Snapshot()[0].Next, capped.UsableUntil)
	}
	if next.Before(capped.RefreshAt) || !next.Before(capped.UsableUntil) {
		t.Fatalf("re-planned for %v; want from the capped RefreshAt %v and before its usable end %v", next, capped.RefreshAt, capped.UsableUntil)
	}
	advance(next)
	r := h.result()
	if r.Class != ClassOK || r.Token.Value == first.Token.Value || srcA.Minted() != 2 {
		t.Fatalf("refresh at %v: %v, minted %d; want a new token", clock.Now(), r, srcA.Minted())
	}
	if !clock.Now().Before(capped.UsableUntil) {
		t.Fatalf("refreshed at %v, after the capped token's usable end %v", clock.Now(), capped.UsableUntil)
	}
	if want := r.Token.RefreshAt; !r.Next.Equal(want) {
		t.Fatalf("next run %v; want the new token's RefreshAt %v", r.Next, want)
	}
}

// peekingRefresher is a fakeRefresher that is also a Peeker. Each Peek
// reports on entered (if set), then waits on gate (if set).
type peekingRefresher struct {
	*fakeRefresher
	mu      sync.Mutex
	peeks   int
	peek    func(n int) (tokencache.Token, bool, error)
	entered chan struct{}
	gate    chan struct{}
}

func (p *peekingRefresher) Peek(ctx context.Context, app string) (tokencache.Token, bool, error) {
	p.mu.Lock()
	p.peeks++
	n := p.peeks
	p.mu.Unlock()
	if p.entered != nil {
		p.entered <- struct{}{}
	}
	if p.gate != nil {
		select {
		case <-p.gate:
		case <-ctx.Done():
			return tokencache.Token{}, false, ctx.Err()
		}
	}
	return p.peek(n)
}

func (p *peekingRefresher) Peeks() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.peeks
}

// steady answers every Refresh with a token due in an hour.
func steady(clock *fakeClock) *fakeRefresher {
	return newFakeRefresher(func(ctx context.Context, app string, n int) (tokencache.Token, error) {
		return tokenAt(clock.Now(), time.Hour, 10*time.Minute), nil
	})
}

func recv(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("no %s within 5s", what)
	}
}

// A change moves the next run to the record's RefreshAt, earlier (a cap)
// or later (a token stored by another process), without a Refresh.
func TestChangedMovesTheNextRunToTheRecordsRefreshAt(t *testing.T) {
	clock := &fakeClock{now: t0}
	var mu sync.Mutex
	var record tokencache.Token
	p := &peekingRefresher{fakeRefresher: steady(clock), peek: func(int) (tokencache.Token, bool, error) {
		mu.Lock()
		defer mu.Unlock()
		return record, true, nil
	}}
	h := startOn(t, clock, Config{Apps: []string{"wxa"}, Refresher: p}, zeroRand)
	first := h.result()
	if next := h.waitIdle(); !next.Equal(first.Token.RefreshAt) {
		t.Fatalf("idle until %v; want %v", next, first.Token.RefreshAt)
	}
	for _, tc := range []struct {
		name      string
		refreshIn time.Duration
	}{{"capped", 2 * time.Minute}, {"replaced", 3 * time.Hour}} {
		mu.Lock()
		record = tokenAt(clock.Now(), tc.refreshIn, 4*time.Minute)
		want := record.RefreshAt
		mu.Unlock()
		h.s.Changed("wxa")
		if next := h.waitIdle(); !next.Equal(want) {
			t.Fatalf("%s: idle until %v after the change; want the record's RefreshAt %v", tc.name, next, want)
		}
		if st := h.s.Snapshot()[0]; !st.Next.Equal(want) {
			t.Fatalf("%s: Snapshot says next %v; want %v", tc.name, st.Next, want)
		}
	}
	if n := p.count("wxa"); n != 1 {
		t.Fatalf("%d Refresh calls; a change must cost a Peek, not a Refresh", n)
	}
	// The plan holds: the next Refresh comes at the last RefreshAt.
	clock.advanceTo(t0.Add(3 * time.Hour))
	r := h.result()
	if got := clock.Now(); r.AppID != "wxa" || !got.Equal(t0.Add(3*time.Hour)) {
		t.Fatalf("refreshed at %v; want %v", got, t0.Add(3*time.Hour))
	}
}

// A burst of changes costs at most the read under way and one after it.
func TestChangedCoalescesABurst(t *testing.T) {
	clock := &fakeClock{now: t0}
	p := &peekingRefresher{fakeRefresher: steady(clock), entered: make(chan struct{}, 4), gate: make(chan struct{}),
		peek: func(int) (tokencache.Token, bool, error) {
			return tokenAt(clock.Now(), 30*time.Minute, 5*time.Minute), true, nil
		}}
	h := startOn(t, clock, Config{Apps: []string{"wxa", "wxb"}, Refresher: p}, zeroRand)
	h.result()
	h.result()
	h.waitIdle()
	h.s.Changed("wxa")
	recv(t, p.entered, "Peek after the first change")
	for range 1000 {
		h.s.Changed("wxa")
	}
	p.gate <- struct{}{}
	recv(t, p.entered, "second Peek for the changes during the first")
	for range 1000 {
		h.s.Changed("wxa")
	}
	p.gate <- struct{}{}
	recv(t, p.entered, "third Peek for the changes during the second")
	p.gate <- struct{}{}
	want := t0.Add(30 * time.Minute)
	if next := h.waitIdle(); !next.Equal(want) {
		t.Fatalf("idle until %v; want %v", next, want)
	}
	if n := p.Peeks(); n != 3 {
		t.Fatalf("%d Peeks for 2001 changes in three bursts; want 3", n)
	}
}

// A change reported while the app's Refresh runs may postdate the read
// that Refresh made: the record is read again once it ends.
func TestChangedDuringARefreshIsReadAfterIt(t *testing.T) {
	clock := &fakeClock{now: t0}
	inRefresh, release := make(chan struct{}, 1), make(chan struct{})
	ref := newFakeRefresher(func(ctx context.Context, app string, n int) (tokencache.Token, error) {
		if n == 2 {
			inRefresh <- struct{}{}
			<-release
		}
		return tokenAt(clock.Now(), time.Hour, 10*time.Minute), nil
	})
	p := &peekingRefresher{fakeRefresher: ref, entered: make(chan struct{}, 4),
		peek: func(int) (tokencache.Token, bool, error) {
			return tokenAt(clock.Now(), 2*time.Minute, 4*time.Minute), true, nil
		}}
	h := startOn(t, clock, Config{Apps: []string{"wxa"}, Refresher: p}, zeroRand)
	h.result()
	clock.advanceTo(h.waitIdle())
	recv(t, inRefresh, "second Refresh")
	h.s.Changed("wxa")
	if n := p.Peeks(); n != 0 {
		t.Fatalf("%d Peeks while the Refresh runs; want none yet", n)
	}
	close(release)
	h.result()
	recv(t, p.entered, "Peek after the Refresh")
	if next, want := h.waitIdle(), clock.Now().Add(2*time.Minute); !next.Equal(want) {
		t.Fatalf("idle until %v; want the re-read record's RefreshAt %v", next, want)
	}
}

// A record that is gone, or cannot be read, makes the app due at once:
// Refresh then decides, fetching only if it must.
func TestChangedRecordGoneOrUnreadableRefreshesAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name  string
		found bool
		err   error
	}{{"gone", false, nil}, {"unreadable", false, errors.New("redis: connection refused")}} {
		t.Run(tc.name, func(t *testing.T) {
			clock := &fakeClock{now: t0}
			p := &peekingRefresher{fakeRefresher: steady(clock), peek: func(int) (tokencache.Token, bool, error) { return tokencache.Token{}, tc.found, tc.err }}
			h := startOn(t, clock, Config{Apps: []string{"wxa"}, Refresher: p}, zeroRand)
			h.result()
			h.waitIdle()
			h.s.Changed("wxa")
			r := h.result()
			if got := clock.Now(); r.AppID != "wxa" || !got.Equal(t0) || p.count("wxa") != 2 || p.Peeks() != 1 {
				t.Fatalf("after the change: %d Refresh calls, %d Peeks, at %v; want a second Refresh at once", p.count("wxa"), p.Peeks(), got)
			}
		})
	}
}

// A Refresher that cannot Peek is refreshed at once on a change (its
// Refresh reads the record, and fetches only if it is due).
func TestChangedWithoutAPeekerRefreshesAtOnce(t *testing.T) {
	clock := &fakeClock{now: t0}
	ref := steady(clock)
	h := startOn(t, clock, Config{Apps: []string{"wxa"}, Refresher: ref}, zeroRand)
	h.result()
	h.waitIdle()
	h.s.Changed("wxa")
	if r := h.result(); r.AppID != "wxa" || ref.count("wxa") != 2 || !clock.Now().Equal(t0) {
		t.Fatalf("%d Refresh calls after the change; want 2, at once", ref.count("wxa"))
	}
}

// Changed is a no-op for an unknown app, a removed app and a scheduler
// that is not running (a replica that does not lead: Run reads every app
// when it starts).
func TestChangedIgnoresUnknownStoppedAndIdleSchedulers(t *testing.T) {
	clock := &fakeClock{now: t0}
	p := &peekingRefresher{fakeRefresher: newFakeRefresher(func(ctx context.Context, app string, n int) (tokencache.Token, error) {
		if app == "wxbad" {
			return tokencache.Token{}, &wechat.Error{Code: 40125, Endpoint: wechat.EndpointToken}
		}
		return tokenAt(clock.Now(), time.Hour, 10*time.Minute), nil
	}), peek: func(int) (tokencache.Token, bool, error) {
		return tokenAt(clock.Now(), time.Minute, time.Minute), true, nil
	}}

	s, err := New(Config{Apps: []string{"wxa", "wxbad"}, Refresher: p, Clock: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	s.Changed("wxa") // not running
	s.Changed("nope")
	if len(s.pending) != 0 || len(s.kick) != 0 || s.entries[0].changed {
		t.Fatal("Changed before Run queued work")
	}

	h := startOn(t, clock, Config{Apps: []string{"wxa", "wxbad"}, Refresher: p}, zeroRand)
	h.result()
	h.result()
	h.waitIdle()
	if _, removed, err := h.s.SetApps([]string{"wxa"}); err != nil || len(removed) != 1 {
		t.Fatalf("SetApps: removed %v, err %v", removed, err)
	}
	h.s.Changed("wxbad") // removed
	h.s.Changed("nope")
	h.s.Changed("wxa") // the one that counts: its re-plan is the next idle
	if next := h.waitIdle(); !next.Equal(t0.Add(time.Minute)) || p.Peeks() != 1 {
		t.Fatalf("idle until %v after %d Peeks; want one Peek (wxa's), next at +1m", next, p.Peeks())
	}
	if p.count("wxbad") != 1 {
		t.Fatal("the stopped app was refreshed again")
	}
}

// A change reported before the app's Refresh starts is read by that
// Refresh: no Peek follows it.
func TestChangedBeforeARefreshCostsNoPeek(t *testing.T) {
	clock := &fakeClock{now: t0}
	p := &peekingRefresher{fakeRefresher: steady(clock), peek: func(int) (tokencache.Token, bool, error) {
		return tokenAt(clock.Now(), time.Minute, time.Minute), true, nil
	}}
	h := startOn(t, clock, Config{Apps: []string{"wxa"}, Refresher: p, MaxConcurrent: 1}, zeroRand)
	h.result()
	next := h.waitIdle()
	// Make the app due and report a change in the same instant: the loop
	// sees both together, refreshes first, and the refresh covers the change.
	clock.mu.Lock()
	clock.now = next
	clock.mu.Unlock()
	h.s.Changed("wxa")
	h.result()
	if h.waitIdle(); p.Peeks() != 0 {
		t.Fatalf("%d Peeks after a Refresh that started after the change; want 0", p.Peeks())
	}
}
