package lock

import (
	"context"
	"fmt"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/internal/redistest"
)

type timings struct{ lease, renew, retry time.Duration }

var (
	// fast: a crashed leader is replaced within about a second.
	fast = timings{lease: time.Second, renew: 600 * time.Millisecond, retry: 100 * time.Millisecond}
	// longLease makes "released" and "expired" far apart: a takeover well
	// under lease-retry can only come from a release or a noticed loss.
	longLease = timings{lease: 3 * time.Second, renew: 2 * time.Second, retry: 100 * time.Millisecond}
)

// candidate is an Elector under test with its callbacks turned into
// channels.
type candidate struct {
	*Elector
	id      string
	started chan context.Context // the leading ctx of each term
	stopped chan bool            // whether the leading ctx was already done
	leaders chan string          // OnNewLeader values

	mu      sync.Mutex
	leadCtx context.Context

	cancel context.CancelFunc
	done   chan error // Run's result
}

// group checks, every time one of its candidates starts leading, that no
// other one believes it leads.
type group struct {
	mu         sync.Mutex
	members    []*candidate
	violations []string
}

func newGroup(t *testing.T) *group {
	g := &group{}
	// Registered first, so it runs after every Run was stopped.
	t.Cleanup(func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		for _, v := range g.violations {
			t.Error(v)
		}
	})
	return g
}

func (g *group) checkSoleLeader(c *candidate) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, o := range g.members {
		if o != c && o.IsLeader() {
			g.violations = append(g.violations, fmt.Sprintf("%s started leading while %s still led", c.id, o.id))
		}
	}
}

func (g *group) add(t *testing.T, client redis.UniversalClient, id string, tm timings) *candidate {
	t.Helper()
	c := &candidate{
		id:      id,
		started: make(chan context.Context, 16),
		stopped: make(chan bool, 16),
		leaders: make(chan string, 64),
	}
	e, err := NewElector(ElectorConfig{
		Client:        client,
		Name:          "tokenkeeper:leader",
		Identity:      id,
		LeaseDuration: tm.lease,
		RenewDeadline: tm.renew,
		RetryPeriod:   tm.retry,
		Callbacks: LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				if g != nil {
					g.checkSoleLeader(c)
				}
				c.mu.Lock()
				c.leadCtx = ctx
				c.mu.Unlock()
				c.started <- ctx
				<-ctx.Done()
			},
			OnStoppedLeading: func() {
				c.mu.Lock()
				ctx := c.leadCtx
				c.mu.Unlock()
				// leadCtx may not be set yet if OnStartedLeading's goroutine
				// has not run; the Elector cancels before either way.
				c.stopped <- ctx == nil || ctx.Err() != nil
			},
			OnNewLeader: func(identity string) {
				select {
				case c.leaders <- identity:
				default:
				}
			},
		},
	})
	if err != nil {
		t.Fatalf("NewElector(%s): %v", id, err)
	}
	c.Elector = e
	if g != nil {
		g.mu.Lock()
		g.members = append(g.members, c)
		g.mu.Unlock()
	}
	return c
}

// run starts c.Run; the test's cleanup stops it and waits for it.
func (c *candidate) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel, c.done = cancel, make(chan error, 1)
	go func() { c.done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s: Run did not return within 10s of cancel", c.id)
		}
	})
}

// stop cancels c.Run and returns its result.
func (c *candidate) stop(t *testing.T) error {
	t.Helper()
	c.cancel()
	select {
	case err := <-c.done:
		c.done <- err // for the cleanup
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: Run did not return within 10s of cancel", c.id)
		return nil
	}
}

func await[T any](t *testing.T, ch <-chan T, within time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(within):
		t.Fatalf("timed out after %v waiting for %s", within, what)
		var zero T
		return zero
	}
}

// firstStarted waits until one of cs starts leading.
func firstStarted(t *testing.T, within time.Duration, cs ...*candidate) (*candidate, context.Context) {
	t.Helper()
	type term struct {
		c   *candidate
		ctx context.Context
	}
	won := make(chan term, len(cs))
	quit := make(chan struct{})
	defer close(quit)
	for _, c := range cs {
		go func() {
			select {
			case ctx := <-c.started:
				won <- term{c, ctx}
			case <-quit:
			}
		}()
	}
	w := await(t, won, within, "a leader")
	return w.c, w.ctx
}

func TestNewElectorValidation(t *testing.T) {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer client.Close()
	good := ElectorConfig{
		Client: client, Name: "tokenkeeper:leader", Identity: "host-1",
		LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second,
	}
	if _, err := NewElector(good); err != nil {
		t.Fatalf("valid config rejected: %v", err)
	}
	cases := []struct {
		name   string
		change func(*ElectorConfig)
		want   string
	}{
		{"nil client", func(c *ElectorConfig) { c.Client = nil }, "Client is nil"},
		{"empty name", func(c *ElectorConfig) { c.Name = "" }, "Name: must not be empty"},
		{"empty identity", func(c *ElectorConfig) { c.Identity = "" }, "Identity: must not be empty"},
		{"zero retry", func(c *ElectorConfig) { c.RetryPeriod = 0 }, "RetryPeriod: 0s: must be positive"},
		{"negative retry", func(c *ElectorConfig) { c.RetryPeriod = -time.Second }, "RetryPeriod: -1s"},
		{"renew = retry", func(c *ElectorConfig) { c.RenewDeadline = c.RetryPeriod }, "RenewDeadline: 2s must be greater than RetryPeriod 2s"},
		{"renew < retry", func(c *ElectorConfig) { c.RenewDeadline = time.Second }, "RenewDeadline: 1s must be greater than RetryPeriod 2s"},
		{"lease = renew", func(c *ElectorConfig) { c.LeaseDuration = c.RenewDeadline }, "LeaseDuration: 10s must be greater than RenewDeadline 10s"},
		{"lease < renew", func(c *ElectorConfig) { c.LeaseDuration = 5 * time.Second }, "LeaseDuration: 5s must be greater than RenewDeadline 10s"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.change(&cfg)
			e, err := NewElector(cfg)
			if err == nil || e != nil {
				t.Fatalf("NewElector = %v, %v; want an error", e, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
	// Several problems are all reported.
	_, err := NewElector(ElectorConfig{})
	for _, field := range []string{"Client", "Name", "Identity", "RetryPeriod", "RenewDeadline", "LeaseDuration"} {
		if err == nil || !strings.Contains(err.Error(), field+": ") && !strings.Contains(err.Error(), "ElectorConfig."+field) {
			t.Errorf("zero config: error %v does not name %s", err, field)
		}
	}
}

func TestLeaseValueCarriesIdentity(t *testing.T) {
	mr := miniredis.RunT(t)
	client := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = client.Close() })
	c := (*group)(nil).add(t, client, "pod/web-7f9-1234", fast)
	ctx := context.Background()
	if id, err := c.Leader(ctx); err != nil || id != "" {
		t.Fatalf("Leader with no holder = %q, %v; want \"\", nil", id, err)
	}
	c.run(t)
	await(t, c.started, 5*time.Second, "the only candidate to lead")
	raw, err := mr.Get("tokenkeeper:leader")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^pod/web-7f9-1234/[A-Za-z0-9_-]{16}$`).MatchString(raw) {
		t.Fatalf("lease value %q is not identity/16 base64url characters", raw)
	}
	if id, err := c.Leader(ctx); err != nil || id != "pod/web-7f9-1234" {
		t.Fatalf("Leader = %q, %v; want the identity", id, err)
	}
	if got := await(t, c.leaders, 5*time.Second, "OnNewLeader"); got != "pod/web-7f9-1234" {
		t.Fatalf("OnNewLeader(%q), want its own identity", got)
	}
	if ttl := mr.TTL("tokenkeeper:leader"); ttl <= 0 || ttl > fast.lease {
		t.Fatalf("lease TTL = %v, want in (0, %v]", ttl, fast.lease)
	}
}

func TestRunTwiceAtOnceIsRefused(t *testing.T) {
	mr := miniredis.RunT(t)
	client := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = client.Close() })
	c := (*group)(nil).add(t, client, "host-1", fast)
	c.run(t)
	await(t, c.started, 5*time.Second, "leading")
	if err := c.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Fatalf("second Run = %v, want an 'already running' error", err)
	}
}

func TestOneLeaderAmongThree(t *testing.T) {
	srv := redistest.Start(t)
	g := newGroup(t)
	var cs []*candidate
	for i := range 3 {
		c := g.add(t, srv.Client(), fmt.Sprintf("host-%d", i), fast)
		cs = append(cs, c)
		c.run(t)
	}
	leader, _ := firstStarted(t, 5*time.Second, cs...)
	ctx := context.Background()
	for _, c := range cs {
		if got, want := c.IsLeader(), c == leader; got != want {
			t.Errorf("%s.IsLeader() = %v, want %v", c.id, got, want)
		}
		if id, err := c.Leader(ctx); err != nil || id != leader.id {
			t.Errorf("%s.Leader() = %q, %v; want %q", c.id, id, err, leader.id)
		}
	}
	if n := leader.Transitions(); n != 1 {
		t.Errorf("leader Transitions = %d, want 1", n)
	}
	// Standbys learn who leads.
	for _, c := range cs {
		if c == leader {
			continue
		}
		if got := await(t, c.leaders, 5*time.Second, c.id+" to observe the leader"); got != leader.id {
			t.Errorf("%s observed leader %q, want %q", c.id, got, leader.id)
		}
	}
	// Without renewals the lease would expire after 1s and a standby would
	// take it; for 1.5 leases nobody else may start leading.
	quiet := time.After(fast.lease * 3 / 2)
	for waiting := true; waiting; {
		select {
		case <-quiet:
			waiting = false
		case <-cs[0].started:
			t.Fatalf("%s started leading while %s renewed", cs[0].id, leader.id)
		case <-cs[1].started:
			t.Fatalf("%s started leading while %s renewed", cs[1].id, leader.id)
		case <-cs[2].started:
			t.Fatalf("%s started leading while %s renewed", cs[2].id, leader.id)
		}
	}
	for _, c := range cs {
		if c.IsLeader() != (c == leader) {
			t.Errorf("after 1.5 leases, %s.IsLeader() = %v", c.id, c.IsLeader())
		}
	}
}

func TestShutdownReleasesForAnImmediateTakeover(t *testing.T) {
	srv := redistest.Start(t)
	g := newGroup(t)
	a := g.add(t, srv.Client(), "host-a", longLease)
	a.run(t)
	leadCtx := await(t, a.started, 5*time.Second, "host-a to lead")
	b := g.add(t, srv.Client(), "host-b", longLease)
	b.run(t)
	if got := await(t, b.leaders, 5*time.Second, "host-b to observe host-a"); got != "host-a" {
		t.Fatalf("host-b observed %q", got)
	}

	start := time.Now()
	if err := a.stop(t); err != nil {
		t.Fatalf("host-a Run returned %v, want nil", err)
	}
	// Without the release, host-b could not lead before the lease, renewed
	// at most one retry period ago, expires: 2.9s at the earliest.
	await(t, b.started, time.Second, "host-b to take over after host-a released")
	took := time.Since(start)
	t.Logf("takeover after a clean shutdown: %v (lease %v, retry %v)", took, longLease.lease, longLease.retry)

	if leadCtx.Err() == nil {
		t.Error("host-a's leading ctx is not cancelled after Run returned")
	}
	if a.IsLeader() {
		t.Error("host-a still reports IsLeader after Run returned")
	}
	if ctxWasDone := await(t, a.stopped, time.Second, "host-a OnStoppedLeading"); !ctxWasDone {
		t.Error("OnStoppedLeading ran before the leading ctx was cancelled")
	}
	if id, err := b.Leader(context.Background()); err != nil || id != "host-b" {
		t.Errorf("Leader() = %q, %v; want host-b", id, err)
	}
}

func TestCrashedLeaderIsReplacedAfterLeaseExpiry(t *testing.T) {
	srv := redistest.Start(t)
	g := newGroup(t)
	ownClient := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = ownClient.Close() })
	a := g.add(t, ownClient, "host-a", fast)
	a.run(t)
	await(t, a.started, 5*time.Second, "host-a to lead")
	b := g.add(t, srv.Client(), "host-b", fast)
	b.run(t)
	await(t, b.leaders, 5*time.Second, "host-b to observe host-a")

	// host-a can neither renew nor release: to everyone else it crashed.
	_ = ownClient.Close()
	start := time.Now()
	await(t, b.started, fast.lease+fast.retry*2+2*time.Second, "host-b to take over the expired lease")
	took := time.Since(start)
	t.Logf("takeover after a crash: %v (lease %v, retry %v)", took, fast.lease, fast.retry)
	// The lease was renewed at most a retry period (plus the renewal's own
	// latency) before the crash, so it lived at least this long after it.
	if min := fast.lease - 2*fast.retry; took < min {
		t.Errorf("host-b took over %v after the crash, before the lease could expire (%v)", took, min)
	}
	// checkSoleLeader (in the group) verified that host-a had already
	// stepped down when host-b started: its RenewDeadline < LeaseDuration.
	if a.IsLeader() {
		t.Error("host-a still believes it leads")
	}
}

func TestLeaderStepsDownWhenRedisStops(t *testing.T) {
	srv := redistest.Start(t)
	c := newGroup(t).add(t, srv.Client(), "host-a", fast)
	c.run(t)
	leadCtx := await(t, c.started, 5*time.Second, "host-a to lead")

	srv.Stop()
	start := time.Now()
	// It must stop by RenewDeadline after its last renewal, and in any case
	// before the lease (1s) could pass to someone else.
	select {
	case <-leadCtx.Done():
	case <-time.After(fast.lease):
		t.Fatalf("leading ctx not cancelled %v after Redis stopped", fast.lease)
	}
	t.Logf("stepped down %v after Redis stopped (renew deadline %v)", time.Since(start), fast.renew)
	if c.IsLeader() {
		t.Error("IsLeader() true after the leading ctx was cancelled")
	}
	if ctxWasDone := await(t, c.stopped, time.Second, "OnStoppedLeading"); !ctxWasDone {
		t.Error("OnStoppedLeading ran before the leading ctx was cancelled")
	}

	if err := srv.Resume(); err != nil {
		t.Fatal(err)
	}
	await(t, c.started, 10*time.Second, "host-a to lead again once Redis is back")
	if n := c.Transitions(); n != 2 {
		t.Errorf("Transitions = %d, want 2", n)
	}
}

func TestLeaderStepsDownWhenLeaseIsOverwritten(t *testing.T) {
	srv := redistest.Start(t)
	c := newGroup(t).add(t, srv.Client(), "host-a", longLease)
	c.run(t)
	leadCtx := await(t, c.started, 5*time.Second, "host-a to lead")
	await(t, c.leaders, 5*time.Second, "host-a to observe itself")

	rdb := srv.Client()
	ctx := context.Background()
	const intruder = "intruder/0123456789abcdef"
	if err := rdb.Del(ctx, "tokenkeeper:leader").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(ctx, "tokenkeeper:leader", intruder, 30*time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// The next renewal (within a retry period) is refused; the renew
	// deadline (2s after the last renewal) would come much later.
	select {
	case <-leadCtx.Done():
	case <-time.After(longLease.renew - 2*longLease.retry):
		t.Fatal("host-a did not step down on its next renewal after the lease was overwritten")
	}
	t.Logf("noticed the overwritten lease after %v (retry %v)", time.Since(start), longLease.retry)
	if c.IsLeader() {
		t.Error("IsLeader() true after the lease was taken")
	}
	await(t, c.stopped, time.Second, "OnStoppedLeading")
	if got := await(t, c.leaders, 5*time.Second, "host-a to observe the intruder"); got != "intruder" {
		t.Errorf("OnNewLeader(%q), want intruder", got)
	}
	// Stepping down releases only its own value.
	if v, err := rdb.Get(ctx, "tokenkeeper:leader").Result(); err != nil || v != intruder {
		t.Fatalf("lease value after step-down = %q, %v; want the intruder's value untouched", v, err)
	}
	if id, err := c.Leader(ctx); err != nil || id != "intruder" {
		t.Errorf("Leader() = %q, %v; want intruder", id, err)
	}
	if c.IsLeader() || c.Transitions() != 1 {
		t.Errorf("after the intruder took the lease: IsLeader %v, Transitions %d; want false, 1", c.IsLeader(), c.Transitions())
	}
}

// freezer is a TCP proxy to Redis that can stop forwarding, as a Redis
// paused by SIGSTOP or a network partition that drops packets would: calls
// then hang until the client's own read timeout.
type freezer struct {
	ln     net.Listener
	frozen chan struct{}
	quit   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
}

func newFreezer(t *testing.T, upstream string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, frozen: make(chan struct{}), quit: make(chan struct{})}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			down, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", upstream)
			if err != nil {
				_ = down.Close()
				continue
			}
			f.wg.Add(2)
			go f.pipe(up, down)
			go f.pipe(down, up)
		}
	}()
	t.Cleanup(f.close)
	return f
}

func (f *freezer) pipe(dst, src net.Conn) {
	defer f.wg.Done()
	defer dst.Close()
	defer src.Close()
	go func() { <-f.quit; _ = src.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			select {
			case <-f.frozen:
				<-f.quit
				return
			default:
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil { // EOF or closed: either way this direction is done
			return
		}
	}
}

func (f *freezer) freeze() { close(f.frozen) }

// close drops every connection, so calls still hanging fail at once.
func (f *freezer) close() {
	f.once.Do(func() {
		close(f.quit)
		_ = f.ln.Close()
		f.wg.Wait()
	})
}

func TestLeaderStepsDownOnTimeWhenRedisHangs(t *testing.T) {
	srv := redistest.Start(t)
	proxy := newFreezer(t, srv.Addr())
	// go-redis ignores context deadlines on reads by default; a hung call
	// lasts until ReadTimeout, much longer than the renew deadline.
	client := redis.NewClient(&redis.Options{Addr: proxy.ln.Addr().String(), ReadTimeout: 5 * time.Second, MaxRetries: -1})
	t.Cleanup(func() { _ = client.Close() })
	c := newGroup(t).add(t, client, "host-a", fast)
	c.run(t)
	leadCtx := await(t, c.started, 5*time.Second, "host-a to lead")

	proxy.freeze()
	start := time.Now()
	select {
	case <-leadCtx.Done():
	case <-time.After(fast.lease):
		t.Fatalf("leading ctx not cancelled %v after Redis hung (renew deadline %v)", fast.lease, fast.renew)
	}
	t.Logf("stepped down %v after Redis hung (renew deadline %v)", time.Since(start), fast.renew)
	if c.IsLeader() {
		t.Error("IsLeader() true after the leading ctx was cancelled")
	}
	// OnStoppedLeading must not wait for the hung renewal or release.
	await(t, c.stopped, fast.retry*5, "OnStoppedLeading while Redis hangs")
	proxy.close()
}

func TestLeaderStepsDownWhenRedisRestartsEmpty(t *testing.T) {
	srv := redistest.Start(t)
	c := newGroup(t).add(t, srv.Client(), "host-a", longLease)
	c.run(t)
	leadCtx := await(t, c.started, 5*time.Second, "host-a to lead")

	// The lease is gone with Redis's data: anyone may have taken the empty
	// key since, so the next renewal must be refused and the lead given up
	// long before the 2s renew deadline.
	srv.Restart()
	select {
	case <-leadCtx.Done():
	case <-time.After(longLease.renew - 2*longLease.retry):
		t.Fatal("host-a did not step down after Redis restarted without its lease")
	}
	await(t, c.stopped, time.Second, "OnStoppedLeading")
	await(t, c.started, 5*time.Second, "host-a to win the empty lease again")
	if n := c.Transitions(); n != 2 {
		t.Errorf("Transitions = %d, want 2", n)
	}
	if id, err := c.Leader(context.Background()); err != nil || id != "host-a" {
		t.Errorf("Leader() = %q, %v; want host-a", id, err)
	}
}

// slowRedis is a go-redis hook that delays every command, as a Redis far
// away or overloaded would.
type slowRedis struct{ delay time.Duration }

func (s slowRedis) DialHook(next redis.DialHook) redis.DialHook { return next }

func (s slowRedis) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		s.wait(ctx)
		return next(ctx, cmd)
	}
}

func (s slowRedis) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		s.wait(ctx)
		return next(ctx, cmds)
	}
}

func (s slowRedis) wait(ctx context.Context) {
	t := time.NewTimer(s.delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// The numbers: lease 3 s, renew deadline 1.2 s, retry period 1 s,
// and 300 ms for every Redis command. Alone, the candidate must win once
// and keep the lead: every renewal takes 300-600 ms (the first extension
// also loads the script), far within the renew deadline.
func TestLoneCandidateKeepsTheLeadWhenRedisIsSlow(t *testing.T) {
	mr := miniredis.RunT(t)
	client := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	client.AddHook(slowRedis{delay: 300 * time.Millisecond})
	t.Cleanup(func() { _ = client.Close() })
	tm := timings{lease: 3 * time.Second, renew: 1200 * time.Millisecond, retry: time.Second}
	c := (*group)(nil).add(t, client, "host-a", tm)
	c.run(t)
	leadCtx := await(t, c.started, 5*time.Second, "the only candidate to lead")
	start := time.Now()
	const watch = 4 * time.Second
	select {
	case <-leadCtx.Done():
		t.Fatalf("the only candidate stepped down %v after it started leading (renew deadline %v, retry %v, 300 ms per Redis command)",
			time.Since(start).Round(time.Millisecond), tm.renew, tm.retry)
	case <-time.After(watch): // the observation window, not a synchronization
	}
	if n := c.Transitions(); n != 1 || !c.IsLeader() {
		t.Fatalf("after %v: Transitions %d, IsLeader %v; want 1, true", watch, n, c.IsLeader())
	}
}

// Whoever sees the leading ctx done must see IsLeader false, also when the
// term ends because Run's own ctx is done (the leading ctx used to be a
// child of it, so it was cancelled before the elector even noticed).
func TestShutdownTurnsIsLeaderFalseBeforeTheLeadingCtxIsDone(t *testing.T) {
	mr := miniredis.RunT(t)
	client := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = client.Close() })
	var e *Elector
	started := make(chan struct{})
	leaderWhenDone := make(chan bool, 1)
	e, err := NewElector(ElectorConfig{
		Client: client, Name: "tokenkeeper:leader", Identity: "host-a",
		LeaseDuration: fast.lease, RenewDeadline: fast.renew, RetryPeriod: fast.retry,
		Callbacks: LeaderCallbacks{OnStartedLeading: func(ctx context.Context) {
			close(started)
			<-ctx.Done()
			leaderWhenDone <- e.IsLeader()
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	await(t, started, 5*time.Second, "host-a to lead")
	cancel()
	if await(t, leaderWhenDone, 5*time.Second, "the leading ctx to be done") {
		t.Error("OnStartedLeading saw its ctx done while IsLeader() was still true")
	}
	if err := await(t, done, 5*time.Second, "Run to return"); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}
