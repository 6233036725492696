package lock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// The renew schedule, table-tested the way client-go tests its elector: a
// fake Clock, a scripted lease store, and one harness goroutine that moves
// the clock only when the Elector's Run goroutine is waiting, so every run
// gives the same trace.
//
// The Run goroutine tells the harness each time it is about to wait: it
// creates a timer (then waits on it) or calls the store's acquire or
// release (then waits for the reply). Starting an extension is told too,
// but Run goes on. The harness then moves the clock to the earliest due
// reply or timer (replies first when equal) and delivers it.

type evKind int

const (
	evTimer   evKind = iota // a timer was created: Run is about to wait
	evAcquire               // Run waits for this reply
	evExtend                // an extension started; Run goes on
	evRelease               // Run waits for this reply
)

type event struct {
	kind evKind
	op   *fakeOp
}

// step is one scripted store call: its reply comes took after the call,
// or never if hang.
type step struct {
	took time.Duration
	err  error
	hang bool
}

var errRedisDown = errors.New("dial tcp 127.0.0.1:6379: connect: connection refused")

func ok(took time.Duration) step   { return step{took: took} }
func fail(took time.Duration) step { return step{took: took, err: errRedisDown} }
func refused(took time.Duration) step {
	return step{took: took, err: fmt.Errorf("lock: extend: %w", errLeaseLost)}
}
func held(took time.Duration) step {
	return step{took: took, err: fmt.Errorf("lock: acquire: %w", ErrNotAcquired)}
}
func hang() step { return step{hang: true} }

type fakeOp struct {
	ctx   context.Context
	due   time.Time // zero: never
	err   error
	done  string // traced when the reply is delivered
	reply chan error
}

type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers map[*fakeTimer]bool
	events chan event
}

type fakeTimer struct {
	clock *fakeClock
	at    time.Time
	c     chan time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) Timer {
	c.mu.Lock()
	t := &fakeTimer{clock: c, at: c.now.Add(d), c: make(chan time.Time, 1)}
	c.timers[t] = true
	c.mu.Unlock()
	c.events <- event{kind: evTimer}
	return t
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Stop() bool {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	active := t.clock.timers[t]
	delete(t.clock.timers, t)
	return active
}

// scriptedLease plays each list of steps in order, repeating its last one.
type scriptedLease struct {
	h                           *harness
	mu                          sync.Mutex
	acquires, extends, releases []step
}

func (s *scriptedLease) take(list *[]step) step {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(*list) == 0 {
		return ok(0)
	}
	st := (*list)[0]
	if len(*list) > 1 {
		*list = (*list)[1:]
	}
	return st
}

func (s *scriptedLease) call(ctx context.Context, kind evKind, name string, st step) *fakeOp {
	s.h.tracef("%s", name)
	op := &fakeOp{ctx: ctx, err: st.err, reply: make(chan error, 1)}
	if !st.hang {
		op.due = s.h.clock.Now().Add(st.took)
	}
	op.done = outcome(kind, st.err)
	s.h.clock.events <- event{kind: kind, op: op}
	return op
}

func outcome(kind evKind, err error) string {
	switch {
	case kind == evAcquire && err == nil:
		return "acquired"
	case kind == evAcquire && errors.Is(err, ErrNotAcquired):
		return "held by another"
	case kind == evAcquire:
		return "acquire failed"
	case kind == evExtend && err == nil:
		return "renewed"
	case kind == evExtend && errors.Is(err, errLeaseLost):
		return "renew refused"
	case kind == evExtend:
		return "renew failed"
	case err == nil:
		return "released"
	}
	return "release failed"
}

func (s *scriptedLease) acquire(ctx context.Context, _ string) error {
	op := s.call(ctx, evAcquire, "acquire", s.take(&s.acquires))
	select {
	case err := <-op.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *scriptedLease) extend(ctx context.Context, _ string) <-chan error {
	return s.call(ctx, evExtend, "renew", s.take(&s.extends)).reply
}

func (s *scriptedLease) release(ctx context.Context, _ string) error {
	return <-s.call(ctx, evRelease, "release", s.take(&s.releases)).reply
}

type harness struct {
	t     *testing.T
	e     *Elector
	clock *fakeClock
	t0    time.Time
	// stuck: OnStartedLeading ignores its ctx until OnStoppedLeading was
	// called (or, once Run's ctx is cancelled, until Run returned).
	stuck       bool
	unstick     chan struct{}
	unstickOnce sync.Once

	mu         sync.Mutex
	trace      []string
	pending    []*fakeOp
	flagOff    bool // OnIsLeaderChange(false) came since the term began
	stepDown   bool // the next timer is the wait for OnStartedLeading
	cancelled  bool
	violations []string
}

func newHarness(t *testing.T, store *scriptedLease, stuck bool) *harness {
	events := make(chan event)
	h := &harness{
		t:       t,
		t0:      time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		stuck:   stuck,
		unstick: make(chan struct{}),
	}
	h.clock = &fakeClock{now: h.t0, timers: map[*fakeTimer]bool{}, events: events}
	store.h = h
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never used: the store is scripted
	t.Cleanup(func() { _ = client.Close() })
	e, err := NewElector(ElectorConfig{
		Client: client, Name: "tokenkeeper:leader", Identity: "host-a",
		LeaseDuration: 3 * time.Second, RenewDeadline: 1200 * time.Millisecond, RetryPeriod: time.Second,
		Clock: h.clock,
		Callbacks: LeaderCallbacks{
			OnIsLeaderChange: func(leading bool) {
				h.mu.Lock()
				h.flagOff = !leading
				h.stepDown = !leading
				h.mu.Unlock()
				if leading {
					h.tracef("leading")
				} else {
					h.tracef("not leading")
				}
			},
			OnStartedLeading: func(ctx context.Context) {
				<-ctx.Done()
				h.mu.Lock()
				if !h.flagOff || h.e.IsLeader() {
					h.violations = append(h.violations, "the leading ctx was cancelled before IsLeader turned false and OnIsLeaderChange(false) was called")
				}
				h.mu.Unlock()
				if h.stuck {
					<-h.unstick
					return
				}
				h.tracef("returned")
			},
			OnStoppedLeading: func() {
				h.tracef("stopped")
				h.mu.Lock()
				cancelled := h.cancelled
				h.mu.Unlock()
				if h.stuck && !cancelled {
					h.unstickOnce.Do(func() { close(h.unstick) })
				}
			},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.store = store
	e.jitter = func() float64 { return 0 }
	h.e = e
	return h
}

func (h *harness) tracef(format string, args ...any) {
	at := h.clock.Now().Sub(h.t0).Seconds()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.trace = append(h.trace, fmt.Sprintf("%.2f %s", at, fmt.Sprintf(format, args...)))
}

// run runs the Elector until the next thing due is past horizon, then
// cancels Run's context and lets it return.
func (h *harness) run(horizon time.Duration) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.e.Run(ctx) }()
	defer func() {
		if h.stuck {
			h.mu.Lock()
			if h.cancelled {
				h.unstickOnce.Do(func() { close(h.unstick) })
			}
			h.mu.Unlock()
		}
	}()
	// Real time, only so that a broken harness fails instead of hanging.
	safety := time.NewTimer(30 * time.Second)
	defer safety.Stop()
	for {
		var ev event
		select {
		case err := <-done:
			return err
		case ev = <-h.clock.events:
		case <-safety.C:
			h.t.Fatalf("harness stuck; trace so far:\n%s", strings.Join(h.trace, "\n"))
		}
		if !h.waiting(ev) {
			continue
		}
		at, deliver := h.next()
		h.mu.Lock()
		cancelled := h.cancelled
		h.mu.Unlock()
		if !cancelled && (deliver == nil || at.After(h.t0.Add(horizon))) {
			h.tracef("cancel")
			h.mu.Lock()
			h.cancelled = true
			h.mu.Unlock()
			cancel()
			continue
		}
		if deliver == nil {
			continue
		}
		h.clock.mu.Lock()
		h.clock.now = at
		h.clock.mu.Unlock()
		deliver()
	}
}

// waiting records ev and reports whether Run now waits for the harness.
func (h *harness) waiting(ev event) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch ev.kind {
	case evTimer:
		if h.stepDown {
			// Run waits at most RenewDeadline for OnStartedLeading; unless
			// it is stuck it returns at once and Run goes on by itself.
			h.stepDown = false
			return h.stuck
		}
		return true
	case evExtend:
		h.pending = append(h.pending, ev.op)
		return false
	default:
		h.pending = append(h.pending, ev.op)
		return true
	}
}

// next returns the earliest reply or timer due, and how to deliver it.
// Replies to abandoned calls (their ctx is done) are dropped.
func (h *harness) next() (time.Time, func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var (
		at      time.Time
		deliver func()
	)
	live := h.pending[:0]
	for _, op := range h.pending {
		if op.ctx.Err() != nil {
			continue
		}
		live = append(live, op)
		if !op.due.IsZero() && (deliver == nil || op.due.Before(at)) {
			at, deliver = op.due, func() {
				h.mu.Lock()
				for i, p := range h.pending {
					if p == op {
						h.pending = append(h.pending[:i:i], h.pending[i+1:]...)
						break
					}
				}
				h.mu.Unlock()
				h.tracef("%s", op.done)
				op.reply <- op.err
			}
		}
	}
	h.pending = live
	h.clock.mu.Lock()
	defer h.clock.mu.Unlock()
	for t := range h.clock.timers {
		if deliver == nil || t.at.Before(at) {
			at, deliver = t.at, func() {
				h.clock.mu.Lock()
				delete(h.clock.timers, t)
				h.clock.mu.Unlock()
				t.c <- at
			}
		}
	}
	return at, deliver
}

// stepDownThenCampaign is the end of a term that was not lost, followed
// by a campaign that finds the lease held by another.
func stepDownThenCampaign(at string) []string {
	return []string{
		at + " not leading", at + " returned", at + " stopped", at + " release", at + " released",
		at + " acquire", at + " held by another",
	}
}

func concat(parts ...[]string) []string {
	var out []string
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func shutdown(at string) []string {
	return []string{at + " cancel", at + " not leading", at + " returned", at + " stopped", at + " release", at + " released"}
}

// Lease 3 s, renew deadline 1.2 s, retry period 1 s (the numbers):
// a round starts 1 s after the last success returned and lasts 1.2 s, and
// never ends later than 2.97 s after the last success started.
func TestRenewSchedule(t *testing.T) {
	acquiredAtOnce := []string{"0.00 acquire", "0.00 acquired", "0.00 leading"}
	cases := []struct {
		name     string
		acquires []step
		extends  []step
		stuck    bool
		horizon  time.Duration
		want     []string
		wantErr  string
	}{{
		name:     "Redis answers at once: a renewal every retry period",
		acquires: []step{ok(0)},
		extends:  []step{ok(0)},
		horizon:  2500 * time.Millisecond,
		want: concat(acquiredAtOnce,
			[]string{"1.00 renew", "1.00 renewed", "2.00 renew", "2.00 renewed"},
			shutdown("2.00")),
	}, {
		// The issue: the first renewal used to start 1.3 s after the
		// acquisition started, past its 1.2 s deadline.
		name:     "slow acquisition: the first round starts a retry period after it returned",
		acquires: []step{ok(300 * time.Millisecond)},
		extends:  []step{ok(300 * time.Millisecond)},
		horizon:  4500 * time.Millisecond,
		want: concat(
			[]string{"0.00 acquire", "0.30 acquired", "0.30 leading"},
			[]string{"1.30 renew", "1.60 renewed", "2.60 renew", "2.90 renewed", "3.90 renew", "4.20 renewed"},
			shutdown("4.20")),
	}, {
		name:     "slow renewals: each round starts a retry period after the last one returned",
		acquires: []step{ok(0)},
		extends:  []step{ok(900 * time.Millisecond)},
		horizon:  6 * time.Second,
		want: concat(acquiredAtOnce,
			[]string{"1.00 renew", "1.90 renewed", "2.90 renew", "3.80 renewed", "4.80 renew", "5.70 renewed"},
			shutdown("5.70")),
	}, {
		// After the renewal started at 1.00, the lease may expire in Redis
		// from 1.00 + 2.97: the round that starts at 3.10 ends there, not
		// at 3.10 + 1.2.
		name:     "renewals too slow for the lease: the lease's own validity ends the term",
		acquires: []step{ok(0), held(0)},
		extends:  []step{ok(1100 * time.Millisecond)},
		horizon:  4500 * time.Millisecond,
		want: concat(acquiredAtOnce,
			[]string{"1.00 renew", "2.10 renewed", "3.10 renew"},
			stepDownThenCampaign("3.97"),
			[]string{"3.97 cancel"}),
	}, {
		name:     "failed renewals: retried every retry period, then the deadline",
		acquires: []step{ok(0), held(0)},
		extends:  []step{fail(0)},
		horizon:  2500 * time.Millisecond,
		want: concat(acquiredAtOnce,
			[]string{"1.00 renew", "1.00 renew failed", "2.00 renew", "2.00 renew failed"},
			stepDownThenCampaign("2.20"),
			[]string{"2.20 cancel"}),
	}, {
		name:     "a failed renewal retried within the deadline: the success resets it",
		acquires: []step{ok(0)},
		extends:  []step{fail(500 * time.Millisecond), ok(100 * time.Millisecond), ok(0)},
		horizon:  3500 * time.Millisecond,
		want: concat(acquiredAtOnce,
			[]string{"1.00 renew", "1.50 renew failed", "2.00 renew", "2.10 renewed", "3.10 renew", "3.10 renewed"},
			shutdown("3.10")),
	}, {
		// No second attempt while the first one hangs; the term ends at
		// the deadline without waiting for it.
		name:     "a renewal that hangs past the deadline",
		acquires: []step{ok(0), held(0)},
		extends:  []step{ok(0), hang()},
		horizon:  3500 * time.Millisecond,
		want: concat(acquiredAtOnce,
			[]string{"1.00 renew", "1.00 renewed", "2.00 renew"},
			stepDownThenCampaign("3.20"),
			[]string{"3.20 cancel"}),
	}, {
		name:     "a reply that comes at the deadline is too late, even a success",
		acquires: []step{ok(0), held(0)},
		extends:  []step{ok(0), ok(1200 * time.Millisecond)},
		horizon:  3500 * time.Millisecond,
		want: concat(acquiredAtOnce,
			[]string{"1.00 renew", "1.00 renewed", "2.00 renew", "3.20 renewed"},
			stepDownThenCampaign("3.20"),
			[]string{"3.20 cancel"}),
	}, {
		name:     "lease lost to another holder: steps down at once, nothing to release",
		acquires: []step{ok(0), held(0)},
		extends:  []step{ok(0), refused(100 * time.Millisecond)},
		horizon:  2500 * time.Millisecond,
		want: concat(acquiredAtOnce,
			[]string{"1.00 renew", "1.00 renewed", "2.00 renew", "2.10 renew refused"},
			[]string{"2.10 not leading", "2.10 returned", "2.10 stopped", "2.10 acquire", "2.10 held by another", "2.10 cancel"}),
	}, {
		name:     "lease lost on the first renewal after a slow acquisition",
		acquires: []step{ok(300 * time.Millisecond), held(0)},
		extends:  []step{refused(0)},
		horizon:  2 * time.Second,
		want: []string{"0.00 acquire", "0.30 acquired", "0.30 leading", "1.30 renew", "1.30 renew refused",
			"1.30 not leading", "1.30 returned", "1.30 stopped", "1.30 acquire", "1.30 held by another", "1.30 cancel"},
	}, {
		// The leading work may still run: no release, so no successor
		// before the lease expires; and no new campaign until it returned.
		name:     "OnStartedLeading stuck after the deadline: the lease is left to expire",
		acquires: []step{ok(0), held(0)},
		extends:  []step{fail(0)},
		stuck:    true,
		horizon:  3500 * time.Millisecond,
		want: concat(acquiredAtOnce,
			[]string{"1.00 renew", "1.00 renew failed", "2.00 renew", "2.00 renew failed", "2.20 not leading",
				"3.40 stopped", "3.40 acquire", "3.40 held by another", "3.40 cancel"}),
	}, {
		name:     "OnStartedLeading stuck on shutdown: Run returns after the renew deadline, lease not released",
		acquires: []step{ok(0)},
		extends:  []step{ok(0)},
		stuck:    true,
		horizon:  1500 * time.Millisecond,
		want: concat(acquiredAtOnce,
			[]string{"1.00 renew", "1.00 renewed", "1.00 cancel", "1.00 not leading", "2.20 stopped"}),
		wantErr: "not released: OnStartedLeading had not returned 1.2s after its ctx was cancelled",
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, &scriptedLease{acquires: tc.acquires, extends: tc.extends}, tc.stuck)
			err := h.run(tc.horizon)
			if tc.wantErr == "" && err != nil {
				t.Errorf("Run = %v, want nil", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("Run = %v, want an error containing %q", err, tc.wantErr)
			}
			h.mu.Lock()
			defer h.mu.Unlock()
			if got := strings.Join(h.trace, "\n"); got != strings.Join(tc.want, "\n") {
				t.Errorf("trace:\n%s\n\nwant:\n%s", got, strings.Join(tc.want, "\n"))
			}
			for _, v := range h.violations {
				t.Error(v)
			}
		})
	}
}
