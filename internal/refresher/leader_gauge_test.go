package refresher_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/internal/redistest"
	"github.com/tokenkeeper/tokenkeeper/internal/refresher"
	"github.com/tokenkeeper/tokenkeeper/internal/testlog"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

// holdingHandler passes records to a text handler; the first record with
// message hold is reported on held and kept (its goroutine blocked) until
// release is closed. It freezes the elector at one exact point of its
// step-down, so a test can look at the replica from outside then.
type holdingHandler struct {
	slog.Handler
	s *holdState
}

type holdState struct {
	hold    string
	once    sync.Once
	held    chan slog.Record
	release chan struct{}
}

func (h holdingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.s.hold {
		first := false
		h.s.once.Do(func() { first = true })
		if first {
			h.s.held <- r
			<-h.s.release
		}
	}
	return h.Handler.Handle(ctx, r)
}

func (h holdingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return holdingHandler{h.Handler.WithAttrs(as), h.s}
}

func (h holdingHandler) WithGroup(name string) slog.Handler {
	return holdingHandler{h.Handler.WithGroup(name), h.s}
}

func recordAttr(r slog.Record, key string) string {
	v := ""
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.String()
			return false
		}
		return true
	})
	return v
}

type runningReplica struct {
	base string
	logs *testlog.Buffer
}

// startReplica runs a replica named identity until the test ends.
func startReplica(t *testing.T, redisAddr, wechatURL, identity string, h func(*testlog.Buffer) slog.Handler) *runningReplica {
	t.Helper()
	cfg := testConfig(t, redisAddr, wechatURL, "127.0.0.1:0")
	cfg.Identity = identity
	// A renew deadline that a loaded test machine cannot miss by accident;
	// the retry period bounds how soon a lost lease is noticed.
	cfg.Lease.Duration, cfg.Lease.RenewDeadline, cfg.Lease.RetryPeriod = 10*time.Second, 6*time.Second, 300*time.Millisecond
	return runReplica(t, cfg, h)
}

// runReplica runs a replica of cfg until the test ends and returns once it
// listens.
func runReplica(t *testing.T, cfg *config.Config, h func(*testlog.Buffer) slog.Handler) *runningReplica {
	t.Helper()
	identity := cfg.Identity
	logs := &testlog.Buffer{}
	listening := make(chan string, 1)
	r, err := refresher.New(cfg, slog.New(h(logs)), refresher.WithOnListening(func(addr string) { listening <- addr }))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-ran:
		case <-time.After(15 * time.Second):
			t.Errorf("%s: Run did not return within 15s of cancel", identity)
		}
	})
	select {
	case addr := <-listening:
		return &runningReplica{base: "http://" + addr, logs: logs}
	case err := <-ran:
		t.Fatalf("%s: Run returned before listening: %v", identity, err)
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: not listening within 5s", identity)
	}
	return nil
}

// leaderGauge reads tokenkeeper_leader from the replica's /metrics.
func (r *runningReplica) leaderGauge(t *testing.T) string {
	t.Helper()
	_, body := get(t, r.base+"/metrics", "")
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, "tokenkeeper_leader "); ok {
			return v
		}
	}
	t.Fatalf("no tokenkeeper_leader in %s/metrics", r.base)
	return ""
}

// After a Redis data loss another replica takes the empty lease; the old
// leader learns it at its next renewal (it cannot know sooner). From that
// moment on its tokenkeeper_leader must be 0: before it cancels its
// leading work, before it logs, and before anything else of its step-down.
// The old leader is frozen on its "stopped leading" log line, i.e. after
// its renewal saw the lease lost and its leading ctx was cancelled, while
// the other replica takes over.
func TestLeaderGaugeIsZeroOnceTheLeaseIsSeenLost(t *testing.T) {
	srv := redistest.Start(t)
	fake := wechattest.New(t, wechattest.WithApp("wx1", secret), wechattest.WithLifetime(time.Hour))

	hold := &holdState{hold: "lock: stopped leading", held: make(chan slog.Record, 1), release: make(chan struct{})}
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(hold.release) }) }
	aStarted := make(chan struct{}, 1)
	a := startReplica(t, srv.Addr(), fake.URL(), "rt-a", func(logs *testlog.Buffer) slog.Handler {
		return signalOn("lock: started leading", aStarted, holdingHandler{slog.NewTextHandler(logs, nil), hold})
	})
	t.Cleanup(release) // runs before rt-a's cleanup, which waits for its Run
	select {
	case <-aStarted:
	case <-time.After(5 * time.Second):
		t.Fatalf("rt-a did not lead within 5s:\n%s", a.logs.String())
	}
	bStarted := make(chan struct{}, 1)
	b := startReplica(t, srv.Addr(), fake.URL(), "rt-b", func(logs *testlog.Buffer) slog.Handler {
		return signalOn("lock: started leading", bStarted, slog.NewTextHandler(logs, nil))
	})
	if g := a.leaderGauge(t); g != "1" {
		t.Fatalf("leader rt-a reports tokenkeeper_leader %s, want 1; its logs:\n%s", g, a.logs.String())
	}
	if g := b.leaderGauge(t); g != "0" {
		t.Fatalf("standby rt-b reports tokenkeeper_leader %s, want 0", g)
	}

	// Data loss: the lease is gone.
	if err := srv.Client().FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	var r slog.Record
	select {
	case r = <-hold.held:
	case <-time.After(5 * time.Second):
		t.Fatalf("rt-a did not step down within 5s of the data loss:\n%s", a.logs.String())
	}
	t.Logf("rt-a stepping down: %s", recordAttr(r, "why"))
	if g := a.leaderGauge(t); g != "0" {
		t.Errorf("rt-a, stepping down (%s), reports tokenkeeper_leader %s; want 0 from the moment it stopped leading", recordAttr(r, "why"), g)
	}
	// rt-a is still frozen in its step-down; rt-b takes the empty lease.
	select {
	case <-bStarted:
	case <-time.After(5 * time.Second):
		t.Fatalf("rt-b did not take over within 5s:\n%s", b.logs.String())
	}
	ga, gb := a.leaderGauge(t), b.leaderGauge(t)
	if ga != "0" || gb != "1" {
		t.Errorf("with rt-b leading: tokenkeeper_leader rt-a %s, rt-b %s; want 0, 1", ga, gb)
	}

	// Once rt-a finishes stepping down it is a standby, and says so.
	release()
	if v, err := srv.Client().Get(context.Background(), "rt:leader").Result(); err != nil || !strings.HasPrefix(v, "rt-b/") {
		t.Errorf("lease value %q (%v) after the takeover, want held by rt-b", v, err)
	}
	if ga, gb := a.leaderGauge(t), b.leaderGauge(t); ga != "0" || gb != "1" {
		t.Errorf("after rt-a stepped down: tokenkeeper_leader rt-a %s, rt-b %s; want 0, 1", ga, gb)
	}
}

// signalOn sends on ch (without blocking) after next handled a record with
// message msg.
func signalOn(msg string, ch chan<- struct{}, next slog.Handler) slog.Handler {
	return signalHandler{next, msg, ch}
}

type signalHandler struct {
	slog.Handler
	msg string
	ch  chan<- struct{}
}

func (h signalHandler) Handle(ctx context.Context, r slog.Record) error {
	err := h.Handler.Handle(ctx, r)
	if r.Message == h.msg {
		select {
		case h.ch <- struct{}{}:
		default:
		}
	}
	return err
}

func (h signalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return signalHandler{h.Handler.WithAttrs(as), h.msg, h.ch}
}

func (h signalHandler) WithGroup(name string) slog.Handler {
	return signalHandler{h.Handler.WithGroup(name), h.msg, h.ch}
}
