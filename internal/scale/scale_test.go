package scale

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/internal/metrics"
	"github.com/tokenkeeper/tokenkeeper/internal/redistest"
	"github.com/tokenkeeper/tokenkeeper/internal/scheduler"
	"github.com/tokenkeeper/tokenkeeper/internal/status"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

// params of one scale run.
type params struct {
	apps        int
	lifetime    time.Duration // of the fake's tokens
	concurrency int           // scheduler.max_concurrent
	periods     float64       // steady state observed after each phase, in token periods
	coldLimit   time.Duration // the cold start must end within this
}

func appID(i int) string     { return fmt.Sprintf("wx%016d", i) }
func appSecret(i int) string { return fmt.Sprintf("scale-secret-%019d", i) }

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// TestScale is the full run: TK_SCALE_APPS apps (make scale: 100,000),
// TK_SCALE_LIFETIME_S second tokens (600), TK_SCALE_CONCURRENCY fetches
// at once (64), TK_SCALE_PERIODS token periods observed after each phase
// (1).
func TestScale(t *testing.T) {
	n := envInt("TK_SCALE_APPS", 0)
	if n == 0 {
		t.Skip("the scale run: make scale (TK_SCALE_APPS=100000)")
	}
	run(t, params{
		apps:        n,
		lifetime:    time.Duration(envInt("TK_SCALE_LIFETIME_S", 600)) * time.Second,
		concurrency: envInt("TK_SCALE_CONCURRENCY", 64),
		periods:     float64(envInt("TK_SCALE_PERIODS_X10", 10)) / 10,
		coldLimit:   5 * time.Minute,
	}, true)
}

// TestScaleShort is the scale run at 2,000 apps with 3-minute tokens and
// no steady-state observation: every app gets a token, a second leader
// fetches nothing and plans every app from its record, a scrape sends no
// Redis command and reports no app at 0 s, and no status record is lost.
func TestScaleShort(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a redis-server and a fake WeChat with 2,000 apps")
	}
	run(t, params{apps: 2000, lifetime: 3 * time.Minute, concurrency: 32, periods: 0, coldLimit: time.Minute}, false)
}

// TestScaleFakeWeChat is not a test: it is the fake WeChat of a scale run,
// started by run in a child process (so the leader's RSS is its own). It
// serves until its stdin closes.
func TestScaleFakeWeChat(t *testing.T) {
	if os.Getenv("TK_SCALE_FAKE") == "" {
		t.Skip("the scale run's child process")
	}
	n := envInt("TK_SCALE_FAKE_APPS", 1)
	opts := []wechattest.Option{
		wechattest.WithLifetime(time.Duration(envInt("TK_SCALE_FAKE_LIFETIME_S", 7200)) * time.Second),
		wechattest.WithDailyQuota(1_000_000),
	}
	for i := range n {
		opts = append(opts, wechattest.WithApp(appID(i), appSecret(i)))
	}
	fake := wechattest.NewServer(opts...)
	defer fake.Close()
	fmt.Printf("URL %s\n", fake.URL())
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// startFake runs TestScaleFakeWeChat in a child process and returns its URL.
func startFake(t *testing.T, p params) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestScaleFakeWeChat$", "-test.timeout=0")
	cmd.Env = append(os.Environ(), "TK_SCALE_FAKE=1", "TK_SCALE_FAKE_APPS="+strconv.Itoa(p.apps),
		"TK_SCALE_FAKE_LIFETIME_S="+strconv.Itoa(int(p.lifetime/time.Second)))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "URL "); ok {
				urls <- u
			}
		}
	}()
	select {
	case u := <-urls:
		return u
	case <-time.After(2 * time.Minute):
		t.Fatal("the fake WeChat did not start within 2 minutes")
	}
	return ""
}

// fetchLog counts successful upstream fetches per second since start.
type fetchLog struct {
	start time.Time
	mu    sync.Mutex
	per   map[int64]int
	total atomic.Int64
}

func (l *fetchLog) add(at time.Time) {
	l.total.Add(1)
	l.mu.Lock()
	l.per[int64(at.Sub(l.start)/time.Second)]++
	l.mu.Unlock()
}

// windows returns the fetches in 5 s windows over [from, to).
func (l *fetchLog) windows(from, to time.Time) []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	// from is rounded up: a window that began in the second before it
	// would count the tail of what came before (after a cold start at
	// 2,800 fetches/s, up to 2,800 fetches of the burst).
	a, b := int64((from.Sub(l.start)+time.Second-1)/time.Second), int64(to.Sub(l.start)/time.Second)
	var out []int
	for s := a; s+5 <= b; s += 5 {
		c := 0
		for i := s; i < s+5; i++ {
			c += l.per[i]
		}
		out = append(out, c)
	}
	return out
}

// leader is one refresher process's leading parts: its client, cache,
// scheduler, metrics and status writer, wired as cmd/refresher wires them.
type leader struct {
	client  *redis.Client
	cmds    *commandCounter
	cache   *tokencache.Cache
	sched   *scheduler.Scheduler
	writer  *status.Writer
	reg     *prometheus.Registry
	plans   chan scheduler.Plan
	tokens  []atomic.Bool // by app index: its refresh succeeded (1 B per app: the harness's own heap stays out of the figures)
	tokened atomic.Int64
	cancel  context.CancelFunc
	done    chan error
	quiet   sync.Once
}

type commandCounter struct{ n atomic.Int64 }

func (c *commandCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *commandCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { c.n.Add(1); return next(ctx, cmd) }
}
func (c *commandCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { c.n.Add(int64(len(cmds))); return next(ctx, cmds) }
}

func startLeader(t *testing.T, p params, addr, upstream string, apps []string, log *fetchLog) *leader {
	t.Helper()
	l := &leader{cmds: &commandCounter{}, plans: make(chan scheduler.Plan, 1), done: make(chan error, 1), tokens: make([]atomic.Bool, len(apps))}
	// A connection per fetch under way, and a few for the first pass and
	// the status writer: each costs its buffers (64 KiB).
	l.client = redis.NewClient(&redis.Options{Addr: addr, PoolSize: p.concurrency + 16})
	l.client.AddHook(l.cmds)
	wapps := make([]wechat.App, len(apps))
	for i := range apps {
		wapps[i] = wechat.App{ID: apps[i], Secret: wechat.Secret(appSecret(i)), Mode: wechat.Classic}
	}
	httpc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: p.concurrency, IdleConnTimeout: time.Minute}}
	src, err := wechat.NewSource(wechat.NewClient(wechat.WithBaseURL(upstream), wechat.WithHTTPClient(httpc)), wapps...)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Identity: "scale", Cache: tokencache.DefaultConfig()}
	l.writer = status.NewWriter(l.client, cfg, slog.New(slog.DiscardHandler))
	l.reg = prometheus.NewRegistry()
	m, err := metrics.New(l.reg, metrics.WithPerApp(metrics.PerAppFor(len(apps))))
	if err != nil {
		t.Fatal(err)
	}
	var schedPtr atomic.Pointer[scheduler.Scheduler]
	hooks := m.Hooks()
	hooks.OnFetch = func(ev tokencache.FetchEvent) {
		m.ObserveFetch(ev)
		l.writer.Record(ev)
		if ev.Result == "ok" {
			log.add(time.Now())
		}
	}
	hooks.OnChange = func(app string) {
		if s := schedPtr.Load(); s != nil {
			s.Changed(app)
		}
	}
	l.cache, err = tokencache.New(l.client, src, tokencache.WithHooks(hooks), tokencache.WithRefreshSpread(),
		tokencache.WithDailyBudget(0))
	if err != nil {
		t.Fatal(err)
	}
	m.SetAppSource(metrics.KnownSource(l.cache.Admin(), func() []string { return apps }, nil))
	m.SetCacheStats(l.cache.Admin().Stats)
	m.InitApps(apps)
	l.sched, err = scheduler.New(scheduler.Config{
		Apps: apps, Refresher: l.cache.Admin(), MaxConcurrent: p.concurrency,
		OnPlanned: func(pl scheduler.Plan) { l.plans <- pl },
		OnResult: func(r scheduler.Result) {
			m.ObserveRefresh(r.Class)
			if r.Class == scheduler.ClassOK {
				if i, err := strconv.Atoi(r.AppID[2:]); err == nil && i < len(l.tokens) && !l.tokens[i].Swap(true) {
					l.tokened.Add(1)
				}
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	schedPtr.Store(l.sched)
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	go func() { l.done <- l.sched.Run(ctx) }()
	return l
}

// quiesce stops the leader's own traffic (its scheduler and its status
// writer), so that a scrape's Redis commands can be counted alone.
func (l *leader) quiesce() {
	l.quiet.Do(func() {
		l.cancel()
		<-l.done
		l.writer.Close()
		// Fetches the scheduler started finish on their own (a flight
		// outlives its caller's context): wait until the client has sent
		// nothing for half a second, at most 30 s.
		last, still := l.cmds.n.Load(), time.Now()
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if n := l.cmds.n.Load(); n != last {
				last, still = n, time.Now()
			} else if time.Since(still) > 500*time.Millisecond {
				return
			}
		}
	})
}

func (l *leader) stop() {
	l.quiesce()
	_ = l.cache.Close()
	_ = l.client.Close()
}

// scrape serves /metrics once as Prometheus would fetch it.
func (l *leader) scrape(t *testing.T) (took time.Duration, body string, redisCmds int64) {
	t.Helper()
	h := promhttp.HandlerFor(l.reg, promhttp.HandlerOpts{})
	before := l.cmds.n.Load()
	rec := httptest.NewRecorder()
	start := time.Now()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	took = time.Since(start)
	return took, rec.Body.String(), l.cmds.n.Load() - before
}

func rssBytes() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return -1
}

func heapAfterGC() uint64 {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// redisUsed is INFO memory's used_memory_dataset: the data, without the
// server's fixed overhead and the clients' buffers.
func redisUsed(t *testing.T, rdb *redis.Client) int64 {
	t.Helper()
	info, err := rdb.Info(context.Background(), "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory_dataset:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	t.Fatal("no used_memory_dataset in INFO")
	return 0
}

// histogram prints 5 s window counts and returns max/mean.
func histogram(t *testing.T, name string, w []int) float64 {
	t.Helper()
	if len(w) == 0 {
		return 0
	}
	sum, mx := 0, 0
	for _, c := range w {
		sum += c
		mx = max(mx, c)
	}
	mean := float64(sum) / float64(len(w))
	sorted := append([]int(nil), w...)
	sort.Ints(sorted)
	t.Logf("%s: %d fetches in %d windows of 5 s: mean %.0f, min %d, median %d, max %d (%.2fx the mean)",
		name, sum, len(w), mean, sorted[0], sorted[len(sorted)/2], mx, float64(mx)/max(mean, 1))
	var b strings.Builder
	for i, c := range w {
		fmt.Fprintf(&b, "%d", c)
		if i < len(w)-1 {
			b.WriteByte(' ')
		}
	}
	t.Logf("%s windows: %s", name, b.String())
	return float64(mx) / max(mean, 1)
}

func run(t *testing.T, p params, full bool) {
	period := func() time.Duration {
		c := tokencache.DefaultConfig()
		margin := min(c.Margin, p.lifetime/5)
		usable := p.lifetime - margin
		return usable - min(c.RefreshAhead, usable/2)
	}()
	t.Logf("scale run: %d apps, %v tokens (a refresh period of %v), %d fetches at once, GOMAXPROCS %d; the machine is shared: timings are noisy",
		p.apps, p.lifetime, period, p.concurrency, runtime.GOMAXPROCS(0))
	srv := redistest.Start(t)
	admin := srv.Client()
	t.Cleanup(func() { _ = admin.Close() })
	upstream := startFake(t, p)
	apps := make([]string, p.apps)
	for i := range apps {
		apps[i] = appID(i)
	}
	redisBase := redisUsed(t, admin)
	log := &fetchLog{start: time.Now(), per: map[int64]int{}}
	heapBase := heapAfterGC()

	// Cold start: an empty Redis.
	coldStart := time.Now()
	a := startLeader(t, p, srv.Addr(), upstream, apps, log)
	deadline := time.Now().Add(p.coldLimit)
	for a.tokened.Load() < int64(p.apps) {
		if time.Now().After(deadline) {
			t.Fatalf("cold start: %d of %d apps have a token after %v", a.tokened.Load(), p.apps, p.coldLimit)
		}
		time.Sleep(50 * time.Millisecond) // polling a counter: the figure, not a synchronization
	}
	coldTook := time.Since(coldStart)
	coldEnd := time.Now()
	t.Logf("cold start: all %d apps have a token in %v (%.0f fetches/s)", p.apps, coldTook.Round(time.Millisecond), float64(p.apps)/coldTook.Seconds())
	if pl := <-a.plans; pl.DueNow != p.apps {
		t.Errorf("cold start plan %+v; want every app due", pl)
	}
	heapA := heapAfterGC()
	t.Logf("leader heap after the cold start: %.1f MiB (%.0f B per app over the base; fake WeChat in a child process), RSS %.1f MiB",
		float64(heapA)/(1<<20), float64(heapA-heapBase)/float64(p.apps), float64(rssBytes())/(1<<20))

	took, body, cmds := a.scrape(t)
	t.Logf("/metrics scrape: %v, %d bytes; %d Redis commands meanwhile (the scheduler's and the status writer's: the scrape reads memory)", took.Round(time.Millisecond), len(body), cmds)
	checkScrape(t, body, p.apps)

	if full && p.periods > 0 {
		obs := time.Duration(p.periods * float64(period))
		time.Sleep(time.Until(coldEnd.Add(obs))) // observing traffic over a fixed span of real time
		histogram(t, "after the cold start (the cold start's burst excluded)", log.windows(coldEnd, time.Now()))
	}

	// Takeover: the leader stops; a new one starts on the warm Redis.
	a.quiesce()
	quietScrape(t, a)
	a.stop()
	a = nil
	heapBase = heapAfterGC()
	fetchesBefore := log.total.Load()
	takeoverStart := time.Now()
	b := startLeader(t, p, srv.Addr(), upstream, apps, log)
	t.Cleanup(func() { _ = b.cache.Close(); _ = b.client.Close() })
	var pl scheduler.Plan
	select {
	case pl = <-b.plans:
	case <-time.After(2 * time.Minute):
		t.Fatal("the new leader did not plan within 2 minutes")
	}
	planTook := time.Since(takeoverStart)
	fetchesAtPlan := log.total.Load() - fetchesBefore
	t.Logf("takeover: every app scheduled %v after the new leader started (pass %v): %d from their records, %d due or missing; fetches before every app was scheduled: %d",
		planTook.Round(time.Millisecond), pl.Took.Round(time.Millisecond), pl.FromRecords, pl.DueNow, fetchesAtPlan)
	time.Sleep(time.Until(takeoverStart.Add(5 * time.Second))) // the first 5 s of the new leader, observed
	first5 := log.total.Load() - fetchesBefore
	expected := float64(p.apps) * 5 / period.Seconds()
	t.Logf("takeover: %d fetches in the new leader's first 5 s (all by their phase; the steady-state mean for 5 s is %.0f)", first5, expected)
	if fetchesAtPlan != 0 {
		t.Errorf("the new leader fetched %d times before every app was scheduled; want 0", fetchesAtPlan)
	}
	if !full && pl.FromRecords != p.apps {
		t.Errorf("takeover plan %+v; want every app planned from its record", pl)
	}
	if float64(first5) > 2*expected+20 {
		t.Errorf("the new leader fetched %d times in its first 5 s; want at most twice the mean %.0f", first5, expected)
	}

	if full && p.periods > 0 {
		obs := time.Duration(p.periods * float64(period))
		time.Sleep(time.Until(takeoverStart.Add(obs)))
		histogram(t, "after the takeover (steady state)", log.windows(takeoverStart, time.Now()))
	}
	heapB := heapAfterGC()
	if path := os.Getenv("TK_SCALE_HEAPPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			_ = pprof.WriteHeapProfile(f)
			_ = f.Close()
		}
	}
	t.Logf("new leader heap: %.1f MiB (%.0f B per app over the base), RSS %.1f MiB", float64(heapB)/(1<<20), float64(heapB-heapBase)/float64(p.apps), float64(rssBytes())/(1<<20))
	// Status: every app's last fetch is recorded.
	b.quiesce()
	quietScrape(t, b)
	var statusKeys int
	iter := admin.Scan(context.Background(), 0, "tokenkeeper:{*}:last_fetch", 1000).Iterator()
	for iter.Next(context.Background()) {
		statusKeys++
	}
	t.Logf("status: %d of %d apps have a last-fetch record; dropped %d", statusKeys, p.apps, b.writer.Dropped())
	if statusKeys != p.apps || b.writer.Dropped() != 0 {
		t.Errorf("status: %d records for %d apps, %d dropped", statusKeys, p.apps, b.writer.Dropped())
	}
	keys, _ := admin.DBSize(context.Background()).Result()
	used := redisUsed(t, admin)
	t.Logf("redis: %d keys, dataset %.1f MiB, %.0f B per app (token record, version and rev counters, budget counter, last-fetch record)",
		keys, float64(used)/(1<<20), float64(used-redisBase)/float64(p.apps))
	var parts []string
	var sample int64
	keysOf, _ := admin.Keys(context.Background(), "tokenkeeper:{"+apps[0]+"}:*").Result()
	sort.Strings(keysOf)
	for _, k := range keysOf {
		n, _ := admin.MemoryUsage(context.Background(), k).Result()
		sample += n
		parts = append(parts, fmt.Sprintf("%s %d B", strings.TrimPrefix(k, "tokenkeeper:{"+apps[0]+"}:"), n))
	}
	t.Logf("redis: one app's keys by MEMORY USAGE: %s; total %d B", strings.Join(parts, ", "), sample)
	if per := float64(used-redisBase) / float64(p.apps); per > 1024 {
		t.Errorf("Redis holds %.0f B per app; want at most 1 KiB", per)
	}
}

// quietScrape scrapes a leader whose own traffic is stopped: the scrape
// must send no Redis command at all.
func quietScrape(t *testing.T, l *leader) {
	t.Helper()
	took, body, cmds := l.scrape(t)
	t.Logf("/metrics scrape, the leader's traffic stopped: %v, %d bytes, %d Redis commands", took.Round(time.Millisecond), len(body), cmds)
	if cmds != 0 {
		t.Errorf("a scrape sent %d Redis commands; want 0", cmds)
	}
	checkScrape(t, body, len(l.sched.Snapshot()))
}

// checkScrape: the scrape counts every app and reports none at 0 s usable
// life (every app has a token) and none unknown (the leader read them all).
func checkScrape(t *testing.T, body string, apps int) {
	t.Helper()
	want := map[string]string{
		"tokenkeeper_apps":         strconv.Itoa(apps),
		"tokenkeeper_apps_unknown": "0",
	}
	if !metrics.PerAppFor(apps) {
		want[`tokenkeeper_tokens_usable_seconds_bucket{le="0"}`] = "0"
		want["tokenkeeper_tokens_usable_seconds_count"] = strconv.Itoa(apps)
	}
	got := map[string]string{}
	zeros := 0
	for _, line := range strings.Split(body, "\n") {
		k, v, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		if _, w := want[k]; w {
			got[k] = v
		}
		if strings.HasPrefix(k, "tokenkeeper_token_usable_seconds{") && v == "0" {
			zeros++
		}
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("scrape: %s = %q; want %s", k, got[k], v)
		}
	}
	if zeros != 0 {
		t.Errorf("scrape: %d apps at 0 s usable life; every app has a token", zeros)
	}
}

// TestWindowsStartAfterFrom: the windows after a phase never count what
// happened in the second before it began.
func TestWindowsStartAfterFrom(t *testing.T) {
	t0 := time.Now()
	l := &fetchLog{start: t0, per: map[int64]int{}}
	for i := 0; i < 900; i++ {
		l.add(t0.Add(2*time.Second + 300*time.Millisecond)) // the tail of a burst, in second 2
	}
	for s := 3; s < 13; s++ {
		l.add(t0.Add(time.Duration(s) * time.Second))
	}
	got := l.windows(t0.Add(2*time.Second+600*time.Millisecond), t0.Add(13*time.Second))
	if len(got) != 2 || got[0] != 5 || got[1] != 5 {
		t.Fatalf("windows %v, want [5 5]: the burst before from must not be counted", got)
	}
}
