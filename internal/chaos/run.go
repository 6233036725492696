package chaos

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
)

// run is the state of one chaos run.
type run struct {
	cfg      *Config
	procs    procTable
	redis    *redisServer
	up       *upstream
	client   *redis.Client
	watch    *leaderWatch
	replicas []*replica
	readers  []*readerProc
	env      []string
	secret   string    // the apps' secret (the fake's and every child's)
	started  time.Time // readers started: offsets count from here

	replacerOnce sync.Once
	replacer     *tokencache.Cache
	replacerErr  error
	logMu        sync.Mutex

	stopsMu sync.Mutex
	stops   map[int][][2]time.Time // pid -> frozen intervals

	claimsMu  sync.Mutex
	claims    map[string]int // apps a fault is acting on, and by how many
	appCursor int            // where pickApps starts next

	// Also under claimsMu:
	readerCursor int          // where pickReader starts next
	readersCut   map[int]bool // readers a partition or lost announcement is acting on
	partitions   int          // partitions injected so far (they alternate black hole and refuse)
	poisons      int          // poisoned records written so far (they walk the mutation table)
}

// readerProc is one reader child and what it has reported.
type readerProc struct {
	id    int
	proc  *child
	proxy *redisProxy // its only way to Redis
	mu    sync.Mutex
	last  ReaderLine
	lines int
	gaps  []Gap
	dead  []DeadCall
	final bool
	ready chan struct{} // closed at the first line with an answered call
	once  sync.Once
}

// Run performs one chaos run and returns its report; Check lists what it
// found wrong. An error means the run could not be carried out. Everything
// it started is killed before it returns.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.fillDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.RedisBin == "" {
		bin, err := exec.LookPath("redis-server")
		if err != nil {
			return nil, fmt.Errorf("chaos: redis-server not found on PATH: %w", err)
		}
		cfg.RedisBin = bin
	}
	r := &run{cfg: &cfg, stops: make(map[int][][2]time.Time)}
	defer r.closeProxies() // after the children are gone
	defer r.procs.killAll()
	return r.run(ctx)
}

func (r *run) logf(format string, args ...any) {
	r.logMu.Lock()
	defer r.logMu.Unlock()
	fmt.Fprintf(r.cfg.Log, format+"\n", args...)
}

// offset prints t as seconds since the readers started.
func (r *run) offset(t time.Time) string {
	if r.started.IsZero() {
		return "t=-"
	}
	return fmt.Sprintf("t=%6.2fs", t.Sub(r.started).Seconds())
}

func (r *run) run(ctx context.Context) (*Report, error) {
	cfg := r.cfg
	secret := newSecret()
	r.secret = secret
	r.env = append(os.Environ(), SecretEnv+"="+secret, GatewayKeyEnv+"="+newSecret())

	var err error
	if r.redis, err = startRedis(cfg.RedisBin, cfg.WorkDir, &r.procs); err != nil {
		return nil, err
	}
	if r.up, err = startUpstream(AppIDs(cfg.Apps), secret, cfg.TokenLifetime, cfg.Grace, 1_000_000); err != nil {
		return nil, err
	}
	defer r.up.close()
	if cfg.Apps <= 50 {
		// Name who sent each token request: evidence for the report.
		r.up.identify = func(port int) string {
			if c, err := r.sender(port); err == nil {
				return fmt.Sprintf("%s/%d", c.name, c.pid())
			}
			return "?"
		}
	}
	r.up.serve()
	r.client = redis.NewClient(&redis.Options{Addr: r.redis.addr(), DialTimeout: 200 * time.Millisecond,
		ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond, MaxRetries: -1})
	defer r.client.Close()
	defer func() {
		if r.replacer != nil {
			_ = r.replacer.Close()
		}
	}()
	r.logf("redis-server %s, fake WeChat %s, %d apps, tokens %v (grace %v), refresh every %v; work dir %s",
		r.redis.addr(), r.up.url, cfg.Apps, cfg.TokenLifetime, cfg.Grace, cfg.RefreshInterval(), cfg.WorkDir)

	watchCtx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWatch()
	r.watch = newLeaderWatch(r.redis.addr(), leaseKey(cfg))
	go r.watch.run(watchCtx)

	for i := 0; i < cfg.Replicas; i++ {
		rep := &replica{identity: fmt.Sprintf("replica-%d", i+1)}
		if err = writeReplicaConfig(cfg, cfg.WorkDir, rep, r.redis.addr(), r.up.url); err != nil {
			return nil, err
		}
		rep.log = filepath.Join(cfg.WorkDir, rep.identity+".log")
		if err := r.startReplica(rep); err != nil {
			return nil, err
		}
		r.replicas = append(r.replicas, rep)
	}
	if cfg.Replicas > 0 {
		leader, _, ok := r.watch.waitLeader(ctx, "", 20*time.Second)
		if !ok {
			return nil, fmt.Errorf("chaos: no refresher replica took the lease %q within 20s (logs: %s)", leaseKey(cfg), r.replicaLogs())
		}
		r.logf("replicas %d started; leader %s", cfg.Replicas, leader)
		// Readers start once the leader has fetched every app, so that
		// what they report is the faults, not a cold start.
		if n, err := r.waitStored(ctx, 60*time.Second); err != nil {
			return nil, fmt.Errorf("chaos: the leader stored %d of %d apps' tokens within 60s: %v (logs: %s)", n, cfg.Apps, err, r.replicaLogs())
		}
	}

	r.started = time.Now()
	for i := 0; i < cfg.Readers; i++ {
		if err := r.startReader(i + 1); err != nil {
			return nil, err
		}
	}
	readyBy := time.NewTimer(30 * time.Second)
	defer readyBy.Stop()
	for _, rp := range r.readers {
		select {
		case <-rp.ready:
		case <-rp.proc.done:
			return nil, fmt.Errorf("chaos: reader-%d exited at start: %v (log %s)", rp.id, rp.proc.err, rp.proc.log.Name())
		case <-readyBy.C:
			return nil, fmt.Errorf("chaos: reader-%d made no successful business call within 30s (log %s)", rp.id, rp.proc.log.Name())
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	r.logf("%s %d readers x %d goroutines calling", r.offset(time.Now()), cfg.Readers, cfg.Goroutines)

	schedule := plan(cfg)
	r.printSchedule(schedule)

	runCtx, cancelRun := context.WithDeadline(ctx, r.started.Add(cfg.Duration))
	defer cancelRun()
	var faults sync.WaitGroup
	for _, f := range schedule {
		if !sleepCtx(runCtx, time.Until(r.started.Add(f.Planned))) {
			break
		}
		faults.Add(1)
		go func() { defer faults.Done(); r.inject(runCtx, f) }()
	}
	<-runCtx.Done()
	faults.Wait() // each returns soon once runCtx is done; a frozen process is resumed first
	interrupted := ctx.Err() != nil
	r.logf("%s run over%s; stopping readers and replicas", r.offset(time.Now()), map[bool]string{true: " (interrupted)", false: ""}[interrupted])

	runOver := time.Now()
	readersStopped := r.stopChildren()
	ended := time.Now()
	return r.report(schedule, runOver, ended, readersStopped, interrupted), nil
}

func newSecret() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (r *run) startReplica(rep *replica) error {
	c, err := r.procs.start(rep.identity, r.cfg.RefresherBin, []string{"serve", "--config", rep.config}, r.env, rep.log, nil)
	if err != nil {
		return err
	}
	rep.mu.Lock()
	rep.proc = c
	rep.mu.Unlock()
	return nil
}

func (r *run) replicaLogs() string {
	var logs []string
	for _, rep := range r.replicas {
		logs = append(logs, rep.log)
	}
	return strings.Join(logs, ", ")
}

func (r *run) replicaByIdentity(id string) *replica {
	for _, rep := range r.replicas {
		if rep.identity == id {
			return rep
		}
	}
	return nil
}

func (r *run) replicaByPID(pid int) *replica {
	for _, rep := range r.replicas {
		if c := rep.current(); c != nil && c.pid() == pid {
			return rep
		}
	}
	return nil
}

func (r *run) noteStopped(pid int, from, to time.Time) {
	r.stopsMu.Lock()
	defer r.stopsMu.Unlock()
	r.stops[pid] = append(r.stops[pid], [2]time.Time{from, to})
}

func (r *run) frozen(pid int, from, to time.Time) bool {
	r.stopsMu.Lock()
	defer r.stopsMu.Unlock()
	for _, iv := range r.stops[pid] {
		if from.Before(iv[1].Add(time.Second)) && to.After(iv[0]) {
			return true
		}
	}
	return false
}

func (r *run) startReader(id int) error {
	name := fmt.Sprintf("reader-%d", id)
	// Each reader reaches Redis through a proxy of its own, so a fault can
	// cut that one process off.
	proxy, err := startProxy(name, r.redis.addr())
	if err != nil {
		return err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		proxy.close()
		return fmt.Errorf("reader %d: pipe: %w", id, err)
	}
	rc := ReaderConfig{
		ID: id, RedisAddr: proxy.addr(), UpstreamURL: r.up.url, Apps: r.cfg.Apps, Goroutines: r.cfg.Goroutines,
		Interval: r.cfg.Interval, MaxDuration: r.cfg.Duration + 2*time.Minute, ReportEvery: time.Second,
		KeyPrefix: r.cfg.KeyPrefix, Grace: r.cfg.Grace, Cache: r.cfg.Cache,
	}
	if n := r.cfg.gatewayGoroutines(); n > 0 {
		rc.GatewayGoroutines = n
		for _, rep := range r.replicas {
			rc.Gateways = append(rc.Gateways, rep.gateway)
		}
	}
	c, err := r.procs.start(name, r.cfg.ReaderBin, rc.args(), r.env, filepath.Join(r.cfg.WorkDir, name+".log"), pw)
	_ = pw.Close() // the child has its own copy
	if err != nil {
		_ = pr.Close()
		proxy.close()
		return err
	}
	rp := &readerProc{id: id, proc: c, proxy: proxy, ready: make(chan struct{})}
	r.readers = append(r.readers, rp)
	go rp.consume(pr)
	return nil
}

func (r *run) closeProxies() {
	for _, rp := range r.readers {
		rp.proxy.close()
	}
}

// consume reads the reader's JSON lines until its stdout closes.
func (rp *readerProc) consume(pr *os.File) {
	defer pr.Close()
	sc := bufio.NewScanner(pr)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		var l ReaderLine
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			continue
		}
		rp.mu.Lock()
		rp.last = l
		rp.lines++
		rp.final = rp.final || l.Final
		rp.gaps = append(rp.gaps, l.Gaps...)
		rp.dead = append(rp.dead, l.Dead...)
		rp.mu.Unlock()
		if l.Calls.OK > 0 {
			rp.once.Do(func() { close(rp.ready) })
		}
	}
}

// stopChildren stops the readers (which print their final line), then the
// replicas, then kills whatever is left. It reports whether every reader
// stopped cleanly.
func (r *run) stopChildren() bool {
	var wg sync.WaitGroup
	for _, rp := range r.readers {
		wg.Add(1)
		go func() { defer wg.Done(); rp.proc.terminate(15 * time.Second) }()
	}
	wg.Wait()
	for _, rep := range r.replicas {
		if c := rep.current(); c != nil {
			wg.Add(1)
			go func() { defer wg.Done(); c.terminate(10 * time.Second) }()
		}
	}
	wg.Wait()
	time.Sleep(100 * time.Millisecond) // let the stdout readers drain the last lines
	clean := true
	for _, rp := range r.readers {
		rp.mu.Lock()
		if !rp.final {
			clean = false
		}
		rp.mu.Unlock()
	}
	return clean
}

func (r *run) printSchedule(s []*FaultRecord) {
	if len(s) == 0 {
		r.logf("schedule: no faults")
		return
	}
	r.logf("schedule (offsets from the readers' start, run length %v):", r.cfg.Duration)
	for _, f := range s {
		r.logf("  t=%6.2fs  %s%s", f.Planned.Seconds(), f.Kind, appSuffix(f.App))
	}
}

// waitStored waits until every app has a token record in Redis; it
// returns how many had one at the last look.
func (r *run) waitStored(ctx context.Context, d time.Duration) (int, error) {
	deadline := time.Now().Add(d)
	apps := AppIDs(r.cfg.Apps)
	for {
		pipe := r.client.Pipeline()
		cmds := make([]*redis.IntCmd, len(apps))
		for i, app := range apps {
			cmds[i] = pipe.Exists(ctx, recordKey(r.cfg.KeyPrefix, app))
		}
		_, err := pipe.Exec(ctx)
		n := 0
		for _, c := range cmds {
			if c.Val() == 1 {
				n++
			}
		}
		if err == nil && n == len(apps) {
			return n, nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = errors.New("timed out")
			}
			return n, err
		}
		if !sleepCtx(ctx, 200*time.Millisecond) {
			return n, ctx.Err()
		}
	}
}
