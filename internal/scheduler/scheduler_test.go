package scheduler

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/testlog"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// t0 is 07:00 on 2026-11-21 in Beijing, so the next quota reset is 17 h
// away and distinguishable from every other delay.
var t0 = time.Date(2026, 11, 20, 23, 0, 0, 0, time.UTC)

// fakeClock is the scheduler's clock and timer. The scheduler arms the
// timer, then (when nothing runs) reports on idle the deadline it sleeps
// until; the test moves the clock there, which fires the timer.
type fakeClock struct {
	mu       sync.Mutex
	now      time.Time
	armed    chan time.Time
	deadline time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advanceTo(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.After(c.now) {
		c.now = t
	}
	if c.armed != nil && !c.deadline.After(c.now) {
		c.armed <- c.now
		c.armed = nil
	}
}

type fakeWaker struct{ c *fakeClock }

func (w fakeWaker) Reset(d time.Duration) <-chan time.Time {
	w.c.mu.Lock()
	defer w.c.mu.Unlock()
	ch := make(chan time.Time, 1) // a fresh channel: an old arming can never fire late
	w.c.armed, w.c.deadline = ch, w.c.now.Add(d)
	return ch
}

func (w fakeWaker) Stop() {}

// fakeRefresher answers with fn and counts calls per app.
type fakeRefresher struct {
	mu    sync.Mutex
	calls map[string]int
	fn    func(ctx context.Context, app string, n int) (tokencache.Token, error)
}

func newFakeRefresher(fn func(ctx context.Context, app string, n int) (tokencache.Token, error)) *fakeRefresher {
	return &fakeRefresher{calls: map[string]int{}, fn: fn}
}

func (f *fakeRefresher) Refresh(ctx context.Context, app string) (tokencache.Token, error) {
	f.mu.Lock()
	f.calls[app]++
	n := f.calls[app]
	f.mu.Unlock()
	return f.fn(ctx, app, n)
}

func (f *fakeRefresher) count(app string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[app]
}

type harness struct {
	t       *testing.T
	s       *Scheduler
	clock   *fakeClock
	idle    chan time.Time
	results chan Result
	cancel  context.CancelFunc
	done    chan error
}

// start runs a scheduler on a fake clock. randN, if set, replaces the
// jitter source.
func start(t *testing.T, cfg Config, randN func(int64) int64) *harness {
	return startOn(t, &fakeClock{now: t0}, cfg, randN)
}

// startOn is start on a given clock, for Refreshers that read it.
func startOn(t *testing.T, clock *fakeClock, cfg Config, randN func(int64) int64) *harness {
	t.Helper()
	h := &harness{t: t, clock: clock, idle: make(chan time.Time), results: make(chan Result, 20000), done: make(chan error, 1)}
	cfg.Clock = h.clock.Now
	user := cfg.OnResult
	cfg.OnResult = func(r Result) {
		if user != nil {
			user(r)
		}
		h.results <- r
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	s.newWaker = func() waker { return fakeWaker{h.clock} }
	s.idle = h.idle
	if randN != nil {
		s.randN = randN
	}
	h.s = s
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-h.done:
		case <-time.After(5 * time.Second):
			t.Error("Run did not return within 5s of cancel")
		}
	})
	return h
}

// waitIdle returns the deadline the idle scheduler sleeps until (zero: no
// app is due ever again).
func (h *harness) waitIdle() time.Time {
	h.t.Helper()
	select {
	case next := <-h.idle:
		return next
	case <-time.After(5 * time.Second):
		h.t.Fatal("scheduler did not become idle within 5s")
	}
	return time.Time{}
}

func (h *harness) result() Result {
	h.t.Helper()
	select {
	case r := <-h.results:
		return r
	case <-time.After(5 * time.Second):
		h.t.Fatal("no result within 5s")
	}
	return Result{}
}

// runCycle waits for the scheduler to sleep, wakes it at its deadline and
// returns the result of the call that follows.
func (h *harness) wakeAndResult() Result {
	h.t.Helper()
	next := h.waitIdle()
	if next.IsZero() {
		h.t.Fatal("scheduler idle with nothing due; expected a next run")
	}
	h.clock.advanceTo(next)
	return h.result()
}

func tokenAt(now time.Time, refreshIn, window time.Duration) tokencache.Token {
	return tokencache.Token{Value: "tok-" + now.Format("150405"), Version: 1, RefreshAt: now.Add(refreshIn), UsableUntil: now.Add(refreshIn + window), ExpiresAt: now.Add(refreshIn + window + time.Minute), FetchedAt: now}
}

func maxRand(n int64) int64  { return n - 1 }
func zeroRand(n int64) int64 { return 0 }

func TestSuccessSchedulesAtRefreshAtPlusClampedJitter(t *testing.T) {
	for _, tc := range []struct {
		name       string
		window     time.Duration
		wantJitter time.Duration
	}{
		{"MaxJitter bounds a wide window", 5 * time.Minute, 5 * time.Second},
		{"a tenth of a narrow window", 20 * time.Second, 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := &fakeClock{now: t0}
			ref := newFakeRefresher(func(ctx context.Context, app string, n int) (tokencache.Token, error) {
				return tokenAt(clock.Now(), 100*time.Minute, tc.window), nil
			})
			h := startOn(t, clock, Config{Apps: []string{"wxa"}, Refresher: ref}, maxRand)
			r := h.result()
			if r.Err != nil || r.Class != ClassOK {
				t.Fatalf("first result: class %q err %v; want ok", r.Class, r.Err)
			}
			if want := r.Token.RefreshAt.Add(tc.wantJitter); !r.Next.Equal(want) {
				t.Fatalf("Next = %v; want RefreshAt + %v = %v", r.Next, tc.wantJitter, want)
			}
			// The scheduler sleeps exactly until then, and calls again there.
			r2 := h.wakeAndResult()
			if got := h.clock.Now(); !got.Equal(r.Next) {
				t.Fatalf("second call at %v; want %v", got, r.Next)
			}
			if r2.AppID != "wxa" || ref.count("wxa") != 2 {
				t.Fatalf("second result for %q after %d calls; want wxa after 2", r2.AppID, ref.count("wxa"))
			}
		})
	}
}

func TestJitterIsRandomAndBounded(t *testing.T) {
	apps := make([]string, 200)
	for i := range apps {
		apps[i] = fmt.Sprintf("wx%03d", i)
	}
	ref := newFakeRefresher(func(ctx context.Context, app string, n int) (tokencache.Token, error) {
		return tokenAt(t0, time.Hour, time.Hour), nil
	})
	h := start(t, Config{Apps: apps, Refresher: ref, MaxJitter: 3 * time.Second}, nil)
	distinct := map[time.Duration]bool{}
	for range apps {
		r := h.result()
		j := r.Next.Sub(r.Token.RefreshAt)
		if j < 0 || j > 3*time.Second {
			t.Fatalf("%s: jitter %v outside [0, 3s]", r.AppID, j)
		}
		distinct[j] = true
	}
	if len(distinct) < 100 {
		t.Fatalf("only %d distinct jitters among %d apps; jitter is not random", len(distinct), len(apps))
	}
}

func TestHeldErrorWaitsUntilTheHoldEnds(t *testing.T) {
	until := t0.Add(7 * time.Minute)
	ref := newFakeRefresher(func(ctx context.Context, app string, n int) (tokencache.Token, error) {
		return tokencache.Token{}, &tokencache.HeldError{AppID: app, Until: until, Err: fmt.Errorf("%w: boom", wechat.ErrTransient)}
	})
	h := start(t, Config{Apps: []string{"wxa"}, Refresher: ref, MaxJitter: 2 * time.Second}, maxRand)
	r := h.result()
	if r.Class != ClassHeld {
		t.Fatalf("class %q; want held", r.Class)
	}
	if want := until.Add(2 * time.Second); !r.Next.Equal(want) {
		t.Fatalf("Next = %v; want Until + jitter = %v", r.Next, want)
	}
}

func TestQuotaWaitsForBeijingMidnight(t *testing.T) {
	ref := newFakeRefresher(func(ctx context.Context, app string, n int) (tokencache.Token, error) {
		return tokencache.Token{}, fmt.Errorf("tokencache: app %q: fetch: %w", app, &wechat.Error{Code: 45009, Endpoint: wechat.EndpointToken})
	})
	h := start(t, Config{Apps: []string{"wxa"}, Refresher: ref, MaxJitter: time.Second}, zeroRand)
	r := h.result()
	want := time.Date(2026, 11, 21, 16, 0, 0, 0, time.UTC) // midnight of the 22nd in Beijing
	if r.Class != ClassQuota || !r.Next.Equal(want) {
		t.Fatalf("class %q Next %v; want quota at %v", r.Class, r.Next, want)
	}
}

// A configuration error no longer stops the app for the rest of the
// scheduler's life: it is retried every ConfigRetry, and at once on
// RetryNow (a reload).
func TestConfigErrorIsRetriedSlowlyAndLogsAnError(t *testing.T) {
	var logs testlog.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ref := newFakeRefresher(func(ctx context.Context, app string, n int) (tokencache.Token, error) {
		if app == "wxbad" {
			return tokencache.Token{}, fmt.Errorf("tokencache: app %q: fetch: %w", app, &wechat.Error{Code: 40125, Endpoint: wechat.EndpointToken, Message: "invalid appsecret"})
		}
		return tokenAt(t0, time.Hour, 10*time.Minute), nil
	})
	h := start(t, Config{Apps: []string{"wxbad", "wxgood"}, Refresher: ref, Logger: log}, zeroRand)
	byApp := map[string]Result{}
	for range 2 {
		r := h.result()
		byApp[r.AppID] = r
	}
	if r := byApp["wxbad"]; r.Class != ClassConfig || !r.Next.Equal(t0.Add(DefaultConfigRetry)) {
		t.Fatalf("wxbad: class %q Next %v; want config, retried after %v", r.Class, r.Next, DefaultConfigRetry)
	}
	if r := h.wakeAndResult(); r.AppID != "wxbad" || !h.clock.Now().Equal(t0.Add(DefaultConfigRetry)) || ref.count("wxbad") != 2 {
		t.Fatalf("woke for %q at %v (%d calls of wxbad); want wxbad's slow retry", r.AppID, h.clock.Now(), ref.count("wxbad"))
	}
	h.waitIdle()
	h.s.RetryNow("wxbad")
	if r := h.result(); r.AppID != "wxbad" || ref.count("wxbad") != 3 || !h.clock.Now().Equal(t0.Add(DefaultConfigRetry)) {
		t.Fatalf("RetryNow: %q, %d calls; want wxbad at once", r.AppID, ref.count("wxbad"))
	}
	var bad AppStatus
	for _, st := range h.s.Snapshot() {
		if st.AppID == "wxbad" {
			bad = st
		}
	}
	if bad.Stopped || bad.LastClass != ClassConfig || bad.Next.IsZero() || !errors.Is(bad.LastErr, wechat.ErrConfig) {
		t.Fatalf("snapshot of wxbad = %+v; want a config error and a next run", bad)
	}
	out := logs.String()
	line := ""
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "level=ERROR") {
			line = l
		}
	}
	for _, want := range []string{"app=wxbad", "class=config", "40125"} {
		if !strings.Contains(line, want) {
			t.Fatalf("ERROR log line %q lacks %q; all logs:\n%s", line, want, out)
		}
	}
}

func TestMinuteLimitWaitsSixtySeconds(t *testing.T) {
	ref := newFakeRefresher(func(ctx context.Context, app string, n int) (tokencache.Token, error) {
		return tokencache.Token{}, fmt.Errorf("fetch: %w", &wechat.Error{Code: 45011, Endpoint: wechat.EndpointToken})
	})
	h := start(t, Config{Apps: []string{"wxa"}, Refresher: ref, MaxJitter: 4 * time.Second}, maxRand)
	r := h.result()
	if want := t0.Add(64 * time.Second); r.Class != ClassMinuteLimit || !r.Next.Equal(want) {
		t.Fatalf("class %q Next %v; want minute_limit at 60s + 4s jitter = %v", r.Class, r.Next, want)
	}
}

func TestBudgetRetriesEveryFiveMinutes(t *testing.T) {
	ref := newFakeRefresher(func(ctx context.Context, app string, n int) (tokencache.Token, error) {
		return tokencache.Token{}, fmt.Errorf("%w: used up", tokencache.ErrBudgetExceeded)
	})
	h := start(t, Config{Apps: []string{"wxa"}, Refresher: ref}, zeroRand)
	if r := h.result(); r.Class != ClassBudget || !r.Next.Equal(t0.Add(5*time.Minute)) {
		t.Fatalf("class %q Next %v; want budget at +5m", r.Class, r.Next)
	}
}

// Transient failures back off exponentially from 1 s to 1 min; the jitter
// spans the upper half of each step.
func TestTransientBackoffGrowsWithJitterAndResetsOnSuccess(t *testing.T) {
	const failures = 9
	ref := newFakeRefresher(func(ctx context.Context, app string, n int) (tokencache.Token, error) {
		switch {
		case n <= failures:
			return tokencache.Token{}, &wechat.Error{Code: -1, Endpoint: wechat.EndpointToken}
		case n == failures+1:
			return tokenAt(t0, 24*time.Hour, time.Hour), nil
		}
		return tokencache.Token{}, fmt.Errorf("%w: redis down", tokencache.ErrUnavailable)
	})
	// Alternate the jitter between its two extremes.
	var flip bool
	var randMu sync.Mutex
	randN := func(n int64) int64 {
		randMu.Lock()
		defer randMu.Unlock()
		flip = !flip
		if flip {
			return 0
		}
		return n - 1
	}
	h := start(t, Config{Apps: []string{"wxa"}, Refresher: ref}, randN)
	r := h.result()
	for k := 1; ; k++ {
		step := min(time.Second<<(k-1), time.Minute)
		want := step / 2 // jitter 0
		if k%2 == 0 {
			want = step // jitter at its maximum, step/2
		}
		if got := r.Next.Sub(h.clock.Now()); r.Class != ClassTransient || got != want {
			t.Fatalf("failure %d: class %q, retry in %v; want transient in %v", k, r.Class, got, want)
		}
		if st := h.s.Snapshot()[0]; st.ConsecutiveFailures != k {
			t.Fatalf("failure %d: snapshot says %d consecutive failures", k, st.ConsecutiveFailures)
		}
		r = h.wakeAndResult()
		if k == failures {
			break
		}
	}
	if r.Class != ClassOK {
		t.Fatalf("call %d: class %q; want ok", failures+1, r.Class)
	}
	if st := h.s.Snapshot()[0]; st.ConsecutiveFailures != 0 || st.TokenVersion != 1 {
		t.Fatalf("after success: snapshot %+v; want 0 failures and the token's version", st)
	}
	// The backoff starts over after a success.
	r = h.wakeAndResult()
	if got := r.Next.Sub(h.clock.Now()); r.Class != ClassUnavailable || got < 500*time.Millisecond || got > time.Second {
		t.Fatalf("first failure after a success: class %q retry in %v; want unavailable in [0.5s, 1s]", r.Class, got)
	}
}

// A token whose RefreshAt is only just ahead is refreshed no sooner than
// MinDelay later.
func TestNearlyDueTokenWaitsAtLeastMinDelay(t *testing.T) {
	ref := newFakeRefresher(func(ctx context.Context, app string, n int) (tokencache.Token, error) {
		return tokenAt(t0, 100*time.Millisecond, 10*time.Minute), nil
	})
	h := start(t, Config{Apps: []string{"wxa"}, Refresher: ref}, zeroRand)
	if r := h.result(); r.Class != ClassOK || !r.Next.Equal(t0.Add(MinDelay)) {
		t.Fatalf("class %q Next %v; want ok at now + MinDelay = %v", r.Class, r.Next, t0.Add(MinDelay))
	}
}

// During a Redis outage tokencache's Refresh returns the last good token
// from memory, already due. That is no success: it backs off instead of
// retrying every MinDelay, but never beyond RedisRetryMax, so Redis's return
// is noticed before the token runs out.
func TestDueTokenBacksOffAsStale(t *testing.T) {
	ref := newFakeRefresher(func(ctx context.Context, app string, n int) (tokencache.Token, error) {
		return tokenAt(t0, -time.Minute, 10*time.Minute), nil // RefreshAt in the past
	})
	h := start(t, Config{Apps: []string{"wxa"}, Refresher: ref}, maxRand)
	r := h.result()
	for k := 1; k <= 8; k++ {
		want := min(time.Second<<(k-1), RedisRetryMax) // Redis failed: retried within 2 s
		if got := r.Next.Sub(h.clock.Now()); r.Class != ClassStale || got != want {
			t.Fatalf("call %d: class %q retry in %v; want stale in %v", k, r.Class, got, want)
		}
		r = h.wakeAndResult()
	}
	if st := h.s.Snapshot()[0]; st.ConsecutiveFailures != 9 || st.LastClass != ClassStale {
		t.Fatalf("snapshot %+v; want 9 consecutive stale results", st)
	}
}

func TestConcurrencyIsBounded(t *testing.T) {
	const apps, limit = 40, 3
	var mu sync.Mutex
	running, peak := 0, 0
	gate := make(chan struct{})
	entered := make(chan struct{}, apps)
	ref := newFakeRefresher(func(ctx context.Context, app string, n int) (tokencache.Token, error) {
		mu.Lock()
		running++
		peak = max(peak, running)
		mu.Unlock()
		entered <- struct{}{}
		select {
		case <-gate:
		case <-ctx.Done():
			return tokencache.Token{}, ctx.Err()
		}
		mu.Lock()
		running--
		mu.Unlock()
		return tokenAt(t0, time.Hour, time.Hour), nil
	})
	names := make([]string, apps)
	for i := range names {
		names[i] = fmt.Sprintf("wx%02d", i)
	}
	h := start(t, Config{Apps: names, Refresher: ref, MaxConcurrent: limit}, nil)
	in := 0 // calls entered
	for done := 0; done < apps; done++ {
		// Every free slot is filled before one call is let finish: the
		// peak is then exactly the limit, not a matter of timing.
		for in-done < min(limit, apps-done) {
			select {
			case <-entered:
				in++
			case <-time.After(5 * time.Second):
				t.Fatalf("%d calls running after %d finished; want %d", in-done, done, min(limit, apps-done))
			}
		}
		gate <- struct{}{}
		h.result()
	}
	if peak != limit {
		t.Fatalf("peak concurrent Refresh calls = %d; want exactly %d", peak, limit)
	}
	for _, n := range names {
		if c := ref.count(n); c != 1 {
			t.Fatalf("%s refreshed %d times; want 1", n, c)
		}
	}
}

func TestCancelStopsRunPromptlyAndCancelsCalls(t *testing.T) {
	entered := make(chan struct{}, 8)
	sawCancel := make(chan error, 8)
	ref := newFakeRefresher(func(ctx context.Context, app string, n int) (tokencache.Token, error) {
		entered <- struct{}{}
		<-ctx.Done() // a Refresh that never ends on its own
		sawCancel <- ctx.Err()
		return tokencache.Token{}, ctx.Err()
	})
	s, err := New(Config{Apps: []string{"wxa", "wxb"}, Refresher: ref, CallTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	for range 2 {
		select {
		case <-entered:
		case <-time.After(5 * time.Second):
			t.Fatal("Refresh not called within 5s")
		}
	}
	cancel() // the lead is lost
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v; want nil after cancel", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return within 2s of cancel")
	}
	for range 2 {
		if err := <-sawCancel; !errors.Is(err, context.Canceled) {
			t.Fatalf("Refresh saw %v; want context.Canceled", err)
		}
	}
	for _, st := range s.Snapshot() {
		if st.Running || st.LastClass != "" {
			t.Fatalf("after cancel: %+v; a cancelled call must leave no result behind", st)
		}
	}
	// The next term runs again.
	ctx2, cancel2 := context.WithCancel(context.Background())
	go func() { done <- s.Run(ctx2) }()
	<-entered
	cancel2()
	if err := <-done; err != nil {
		t.Fatalf("second Run: %v", err)
	}
}

func TestCancelWhileIdle(t *testing.T) {
	ref := newFakeRefresher(func(ctx context.Context, app string, n int) (tokencache.Token, error) {
		return tokenAt(time.Now(), time.Hour, time.Hour), nil
	})
	var got sync.WaitGroup
	got.Add(1)
	s, err := New(Config{Apps: []string{"wxa"}, Refresher: ref, OnResult: func(Result) { got.Done() }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	got.Wait() // now sleeping for an hour on a real timer
	cancel()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return within 2s of cancel while sleeping")
	}
}

func TestRunTwiceAtOnce(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	entered := make(chan struct{}, 1)
	ref := newFakeRefresher(func(ctx context.Context, app string, n int) (tokencache.Token, error) {
		entered <- struct{}{}
		select {
		case <-block:
		case <-ctx.Done():
		}
		return tokencache.Token{}, ctx.Err()
	})
	s, _ := New(Config{Apps: []string{"wxa"}, Refresher: ref})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	<-entered
	if err := s.Run(ctx); !errors.Is(err, ErrRunning) {
		t.Fatalf("second concurrent Run: %v; want ErrRunning", err)
	}
	cancel()
	<-done
}

// Every one of 10,000 apps is refreshed exactly once per cycle.
func TestTenThousandAppsEachRefreshedOncePerCycle(t *testing.T) {
	const n = 10000
	apps := make([]string, n)
	index := make(map[string]int, n)
	for i := range apps {
		apps[i] = fmt.Sprintf("wx%05d", i)
		index[apps[i]] = i
	}
	clock := &fakeClock{now: t0}
	ref := newFakeRefresher(func(ctx context.Context, app string, k int) (tokencache.Token, error) {
		// Due times spread over the hour after the next; read-only map.
		now := clock.Now()
		return tokencache.Token{Value: "t", Version: int64(k), RefreshAt: now.Add(time.Hour + time.Duration(index[app])*time.Second/3), UsableUntil: now.Add(3 * time.Hour), FetchedAt: now}, nil
	})
	h := startOn(t, clock, Config{Apps: apps, Refresher: ref}, nil)
	// Cycle 1 is the start (every app due at once), cycle 2 the refreshes
	// at RefreshAt, spread over 56 minutes.
	cycleEnd := t0
	for cycle := 1; cycle <= 2; cycle++ {
		seen := make(map[string]bool, n)
		var earliest time.Time // the earliest Next reported in this cycle
		record := func(r Result) {
			if earliest.IsZero() || r.Next.Before(earliest) {
				earliest = r.Next
			}
			if seen[r.AppID] {
				t.Fatalf("cycle %d: %s refreshed twice", cycle, r.AppID)
			}
			if r.Err != nil {
				t.Fatalf("cycle %d: %s: %v", cycle, r.AppID, r.Err)
			}
			seen[r.AppID] = true
		}
		var nextCycle time.Time
		for nextCycle.IsZero() {
			select {
			case r := <-h.results:
				record(r)
			case next := <-h.idle:
				// Every result is reported before the loop goes idle.
				for drained := false; !drained; {
					select {
					case r := <-h.results:
						record(r)
					default:
						drained = true
					}
				}
				switch {
				case len(seen) == n:
					nextCycle = next
				case next.IsZero() || next.After(cycleEnd):
					t.Fatalf("cycle %d: idle until %v (cycle ends %v) with %d of %d apps refreshed", cycle, next, cycleEnd, len(seen), n)
				default:
					h.clock.advanceTo(next)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("cycle %d: stuck with %d of %d apps refreshed", cycle, len(seen), n)
			}
		}
		for _, app := range apps {
			if c := ref.count(app); c != cycle {
				t.Fatalf("after cycle %d: %s refreshed %d times", cycle, app, c)
			}
		}
		// Once the cycle is done, the scheduler sleeps until the earliest
		// next run it handed out, and not a moment less.
		if !nextCycle.Equal(earliest) {
			t.Fatalf("after cycle %d: sleeping until %v; want the earliest next run %v", cycle, nextCycle, earliest)
		}
		cycleEnd = nextCycle.Add(time.Duration(n)*time.Second/3 + DefaultMaxJitter)
		h.clock.advanceTo(nextCycle)
	}
}

func TestClass(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, ClassOK},
		{&wechat.Error{Code: 40164, Endpoint: wechat.EndpointToken}, ClassConfig},
		{&tokencache.HeldError{Err: &wechat.Error{Code: 40125, Endpoint: wechat.EndpointToken}}, ClassConfig},
		{fmt.Errorf("%w: appid", tokencache.ErrInvalidAppID), ClassConfig},
		{&tokencache.HeldError{Err: &wechat.Error{Code: 45009, Endpoint: wechat.EndpointToken}}, ClassHeld},
		{&wechat.Error{Code: 45009, Endpoint: wechat.EndpointStableToken}, ClassQuota},
		{tokencache.ErrBudgetExceeded, ClassBudget},
		{fmt.Errorf("x: %w", &wechat.Error{Code: 45011, Endpoint: wechat.EndpointToken}), ClassMinuteLimit},
		{fmt.Errorf("%w: down", tokencache.ErrUnavailable), ClassUnavailable},
		{&wechat.Error{Code: 89501, Endpoint: wechat.EndpointToken}, ClassTransient},
		{context.DeadlineExceeded, ClassTransient},
		// Precedence and the errors Refresh can return besides.
		{&wechat.Error{Code: 40001, Endpoint: wechat.EndpointStableToken}, ClassConfig},
		{&wechat.ConfigError{AppID: "wxa", Reason: "unknown appid"}, ClassConfig},
		{&tokencache.HeldError{Err: &wechat.ConfigError{Reason: "no secret"}}, ClassConfig},
		{&tokencache.HeldError{Err: &wechat.Error{Code: 45011, Endpoint: wechat.EndpointToken}}, ClassHeld},
		{&tokencache.HeldError{Err: fmt.Errorf("%w: used up", tokencache.ErrBudgetExceeded)}, ClassHeld},
		{&tokencache.HeldError{Err: &wechat.Error{Code: -1, Endpoint: wechat.EndpointToken}}, ClassHeld},
		{fmt.Errorf("x: %w", &wechat.Error{Code: 45009, Endpoint: wechat.EndpointToken}), ClassQuota},
		{fmt.Errorf("x: %w", &wechat.Error{Code: 45011, Endpoint: wechat.EndpointStableToken}), ClassMinuteLimit},
		{&wechat.Error{Code: 45011, Endpoint: wechat.EndpointDomainIP}, ClassMinuteLimit},
		{&wechat.Error{Code: -1, Endpoint: wechat.EndpointToken}, ClassTransient},
		{&wechat.Error{Code: 40001, Endpoint: wechat.EndpointDomainIP}, ClassTransient}, // a dead token is no refresh outcome
		{&wechat.RequestError{Endpoint: wechat.EndpointToken, Sent: true, Err: errors.New("connection reset")}, ClassTransient},
		{&wechat.ReplyError{Endpoint: wechat.EndpointToken, Status: 502, Reason: "not HTTP 200"}, ClassTransient},
		{fmt.Errorf("%w: app", tokencache.ErrPassiveRefreshLimited), ClassTransient},
		{tokencache.ErrClosed, ClassTransient},
		{&tokencache.CorruptRecordError{Key: "k", Reason: "bad"}, ClassTransient},
		{context.Canceled, ClassTransient},
		{errors.New("anything else"), ClassTransient},
	} {
		if got := Class(tc.err); got != tc.want {
			t.Errorf("Class(%v) = %q; want %q", tc.err, got, tc.want)
		}
	}
}

func TestNewValidates(t *testing.T) {
	ref := newFakeRefresher(nil)
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Apps: []string{"a"}}, "Refresher: must not be nil"},
		{Config{Refresher: ref}, "Apps: must name at least one app"},
		{Config{Refresher: ref, Apps: []string{"a", ""}}, "Apps[1]: empty appid"},
		{Config{Refresher: ref, Apps: []string{"a", "b", "a"}}, `Apps[2]: appid "a" listed twice`},
		{Config{Refresher: ref, Apps: []string{"a"}, MaxJitter: -1}, "MaxJitter -1ns: must not be negative"},
		{Config{Refresher: ref, Apps: []string{"a"}, MaxConcurrent: -2}, "MaxConcurrent -2: must not be negative"},
		{Config{Refresher: ref, Apps: []string{"a"}, CallTimeout: -time.Second}, "CallTimeout -1s: must not be negative"},
	} {
		_, err := New(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v; want an error containing %q", tc.cfg, err, tc.want)
		}
	}
}

func TestResultNeverPrintsTheToken(t *testing.T) {
	const value = "ACCESS_TOKEN_VALUE_abcdefghijklmnop"
	r := Result{AppID: "wxa", Class: ClassOK, Token: tokencache.Token{Value: value, Version: 3}, Next: t0}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("x", "result", r)
	slog.New(slog.NewTextHandler(&logs, nil)).Info("x", "result", r)
	for _, s := range []string{fmt.Sprint(r), fmt.Sprintf("%v %+v %#v %s %q", r, r, r, r, r), logs.String()} {
		if strings.Contains(s, value) {
			t.Fatalf("printed the token: %s", s)
		}
		if !strings.Contains(s, wechat.Fingerprint(value)) {
			t.Fatalf("printed without the fingerprint: %s", s)
		}
	}
}

// A short hold (a transient backoff) gets a jitter no longer than itself:
// with the usual seconds of jitter a refresh retried right before the
// token's usable end came after it (found by the 1000-app chaos run).
func TestShortHoldGetsAShortJitter(t *testing.T) {
	until := t0.Add(time.Second)
	ref := newFakeRefresher(func(ctx context.Context, app string, n int) (tokencache.Token, error) {
		return tokencache.Token{}, &tokencache.HeldError{AppID: app, Until: until, Err: fmt.Errorf("%w: boom", wechat.ErrTransient)}
	})
	h := start(t, Config{Apps: []string{"wxa"}, Refresher: ref, MaxJitter: 10 * time.Second}, maxRand)
	r := h.result()
	if want := until.Add(time.Second); !r.Next.Equal(want) {
		t.Fatalf("Next = %v; want Until + at most the hold's own length = %v", r.Next, want)
	}
}
