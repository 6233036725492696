package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/internal/redistest"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

// Timings of the process tests, scaled down from production. The fake's
// tokens live 6 s with a 3 s overlap, so (margin 1 s) a token is usable
// for 5 s and due after 3 s (refresh_ahead 2 s): one classic fetch every
// 3 s plus at most 0.2 s of scheduler jitter. overlap 3s > margin 1s +
// near_max_age 0.5s. The lease: 2 s, renewed within 1.2 s, retried every
// 300 ms.
const (
	testLifetime      = 6 * time.Second
	testGrace         = 3 * time.Second
	testRefreshPeriod = 3 * time.Second // lifetime - margin - refresh_ahead
	testUsable        = 5 * time.Second // lifetime - margin
	testLease         = 2 * time.Second
	testRetry         = 300 * time.Millisecond
	testLeaseName     = "test:leader"
	testAPIKey        = "test-api-key-0123456789"
	testNarrowKey     = "narrow-key-0123456789"
)

const replicaYAML = `
identity: %s
redis:
  addrs: [%q]
wechat:
  base_url: %q
  timeout: 2s
apps:
  - {id: wxa, secret_file: %q, mode: classic}
  - {id: wxb, secret: %q, mode: stable}
cache:
  key_prefix: "test:"
  refresh_ahead: 2s
  margin: 1s
  overlap: 3s
  near_max_age: 500ms
  lock_ttl: 2s
  fetch_timeout: 1s
lease:
  name: %q
  duration: 2s
  renew_deadline: 1200ms
  retry_period: 300ms
http:
  addr: %q
  api_keys:
    - {name: all, key: %q, apps: ["*"]}
    - {name: narrow, key: %q, apps: [wxa]}
log:
  level: info
  format: json
`

// fleet is a Redis, a fake WeChat and the config files of n replicas.
type fleet struct {
	t       *testing.T
	redis   *redistest.Server
	client  *redis.Client
	fake    *wechattest.Server
	configs []string
	addrs   []string
	names   []string
	procs   []*proc
}

// newFleet prepares n replicas against a fake whose tokens live lifetime
// (the cache timings stay those of testLifetime: a longer-lived token is
// simply refreshed less often).
func newFleet(t *testing.T, n int, lifetime time.Duration) *fleet {
	t.Helper()
	f := &fleet{t: t, redis: redistest.Start(t)}
	f.client = f.redis.Client()
	secretA, secretB := "secret-a-"+fmt.Sprint(rand.Int64()), "secret-b-"+fmt.Sprint(rand.Int64())
	f.fake = wechattest.New(t, wechattest.WithApp("wxa", secretA), wechattest.WithApp("wxb", secretB),
		wechattest.WithLifetime(lifetime), wechattest.WithGrace(testGrace))
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "wxa.secret")
	if err := os.WriteFile(secretFile, []byte(secretA+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		name := fmt.Sprintf("r%d", i+1)
		addr := freeAddr(t)
		path := filepath.Join(dir, name+".yaml")
		yaml := fmt.Sprintf(replicaYAML, name, f.redis.Addr(), f.fake.URL(), secretFile, secretB, testLeaseName, addr, testAPIKey, testNarrowKey)
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		f.configs, f.addrs, f.names = append(f.configs, path), append(f.addrs, addr), append(f.names, name)
		f.procs = append(f.procs, nil)
	}
	return f
}

func (f *fleet) start(i int) *proc {
	f.procs[i] = startProc(f.t, f.names[i], baseEnv(), "serve", "--config", f.configs[i])
	return f.procs[i]
}

func (f *fleet) url(i int, path string) string { return "http://" + f.addrs[i] + path }

// leader is the identity holding the lease in Redis ("" if none).
func (f *fleet) leader() string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	v, err := f.client.Get(ctx, testLeaseName).Result()
	if err != nil {
		return ""
	}
	id, _, _ := strings.Cut(v, "/")
	return id
}

func (f *fleet) index(name string) int {
	for i, n := range f.names {
		if n == name {
			return i
		}
	}
	f.t.Fatalf("no replica %q", name)
	return -1
}

// leaderGauges reads tokenkeeper_leader from every live replica.
func (f *fleet) leaderGauges() map[string]string {
	out := map[string]string{}
	for i, p := range f.procs {
		if p == nil || p.exited() {
			continue
		}
		for _, line := range strings.Split(httpBody(f.url(i, "/metrics")), "\n") {
			if v, ok := strings.CutPrefix(line, "tokenkeeper_leader "); ok {
				out[f.names[i]] = v
			}
		}
	}
	return out
}

// checker plays a business server: it keeps getting the token from a
// random live replica and calling the fake's business API with it.
type checker struct {
	f         *fleet
	stop      chan struct{}
	wg        sync.WaitGroup
	calls     atomic.Int64
	apiErrors atomic.Int64 // non-200 answers from replicas that were not being stopped
	mu        sync.Mutex
	lastErr   string
	stopping  sync.Map // replica index → true once the test signals it
}

func startChecker(f *fleet, apps ...string) *checker {
	c := &checker{f: f, stop: make(chan struct{})}
	for _, app := range apps {
		c.wg.Add(1)
		go c.loop(app)
	}
	return c
}

func (c *checker) loop(app string) {
	defer c.wg.Done()
	for n := 0; n < 100000; n++ { // bounded; stopped long before
		select {
		case <-c.stop:
			return
		case <-time.After(20 * time.Millisecond):
		}
		i := rand.IntN(len(c.f.procs))
		if p := c.f.procs[i]; p == nil || p.exited() {
			continue
		}
		code, tok, err := call(http.MethodGet, c.f.url(i, "/v1/apps/"+app+"/token"), testAPIKey, "")
		if _, stopping := c.stopping.Load(i); stopping {
			continue
		}
		if err != nil || code != http.StatusOK {
			c.apiErrors.Add(1)
			c.mu.Lock()
			c.lastErr = fmt.Sprintf("%s %s: %d %v %s", c.f.names[i], app, code, err, tok.Error)
			c.mu.Unlock()
			continue
		}
		resp, err := httpClient.Get(c.f.fake.URL() + "/cgi-bin/get_api_domain_ip?access_token=" + url.QueryEscape(tok.AccessToken))
		if err == nil {
			resp.Body.Close()
			c.calls.Add(1)
		}
	}
}

func (c *checker) Stop() {
	close(c.stop)
	c.wg.Wait()
}

// TestReplicasElectOneLeaderAndHandOver runs three real refresher processes
// against a real redis-server and a fake WeChat and proves: exactly one
// leader; SIGKILL of the leader → a successor within the lease duration
// (+ retry period); SIGTERM of a leader → handover well under the lease
// duration (it releases the lease) and exit code 0; across the run, one
// classic fetch per refresh period and never a token WeChat refuses.
func TestReplicasElectOneLeaderAndHandOver(t *testing.T) {
	if testing.Short() {
		t.Skip("process test (about 20 s)")
	}
	f := newFleet(t, 3, testLifetime)
	start := time.Now()
	for i := range f.procs {
		f.start(i)
	}
	for i := range f.procs {
		if !pollUntil(10*time.Second, 20*time.Millisecond, func() bool { return httpStatus(f.url(i, "/readyz")) == http.StatusOK }) {
			t.Fatalf("%s not ready within 10s", f.names[i])
		}
	}

	// Exactly one leader: the lease in Redis names one replica, and that
	// replica alone reports tokenkeeper_leader 1.
	first := f.leader()
	if first == "" {
		t.Fatal("no lease holder in Redis although every replica is ready")
	}
	var gauges map[string]string
	if !pollUntil(2*time.Second, 20*time.Millisecond, func() bool {
		gauges = f.leaderGauges()
		ones := 0
		for _, v := range gauges {
			if v == "1" {
				ones++
			}
		}
		return ones == 1 && gauges[first] == "1" && len(gauges) == 3
	}) {
		t.Fatalf("want exactly %s reporting tokenkeeper_leader 1, got %v", first, gauges)
	}

	chk := startChecker(f, "wxa", "wxb")
	defer func() {
		select {
		case <-chk.stop:
		default:
			chk.Stop()
		}
	}()
	runFor(4 * time.Second)

	// SIGKILL the leader: it cannot release; the lease must expire.
	killed := f.index(first)
	chk.stopping.Store(killed, true)
	killAt := time.Now()
	f.procs[killed].signal(t, syscall.SIGKILL)
	var second string
	if !pollUntil(testLease+3*time.Second, 5*time.Millisecond, func() bool {
		second = f.leader()
		return second != "" && second != first
	}) {
		t.Fatalf("no new leader within %v of SIGKILL", testLease+3*time.Second)
	}
	killTakeover := time.Since(killAt)
	t.Logf("SIGKILL of leader %s: %s took over after %v (lease %v, retry %v)", first, second, killTakeover.Round(time.Millisecond), testLease, testRetry)
	if limit := testLease + testRetry + testRetry/5 + 500*time.Millisecond; killTakeover > limit {
		t.Errorf("takeover after SIGKILL took %v, want <= lease + retry period + jitter (+500ms slack for a loaded machine) = %v", killTakeover, limit)
	}

	runFor(4 * time.Second)

	// SIGTERM the new leader: it releases the lease on its way out.
	termed := f.index(second)
	chk.stopping.Store(termed, true)
	termAt := time.Now()
	f.procs[termed].signal(t, syscall.SIGTERM)
	var third string
	if !pollUntil(testLease+3*time.Second, 5*time.Millisecond, func() bool {
		third = f.leader()
		return third != "" && third != second
	}) {
		t.Fatalf("no new leader within %v of SIGTERM", testLease+3*time.Second)
	}
	termTakeover := time.Since(termAt)
	t.Logf("SIGTERM of leader %s: %s took over after %v", second, third, termTakeover.Round(time.Millisecond))
	if termTakeover > testLease/2 {
		t.Errorf("takeover after SIGTERM took %v, want well under the lease duration (< %v): the lease must be released", termTakeover, testLease/2)
	}
	if code := f.procs[termed].wait(t, 10*time.Second); code != 0 {
		t.Errorf("%s exited with %d after SIGTERM, want 0", second, code)
	}
	if !strings.Contains(f.procs[termed].stderr.String(), "left the election") {
		t.Errorf("%s did not log leaving the election", second)
	}

	// Let the last leader refresh at least twice on its own.
	runFor(2*testRefreshPeriod + time.Second)
	chk.Stop()
	elapsed := time.Since(start)

	// The survivor leads, runs the scheduler, and is the only one saying so.
	survivor := f.index(third)
	if !strings.Contains(f.procs[survivor].stderr.String(), "started leading; running the refresh scheduler") {
		t.Errorf("%s holds the lease but never started its scheduler", third)
	}
	if g := f.leaderGauges(); len(g) != 1 || g[third] != "1" {
		t.Errorf("leader gauges of live replicas %v, want only %s = 1", g, third)
	}

	// The fake's view of the whole run.
	a, b := f.fake.Stats("wxa"), f.fake.Stats("wxb")
	t.Logf("run %v; wxa %+v; wxb %+v; checker: %d business calls, %d API errors", elapsed.Round(time.Millisecond), a, b, chk.calls.Load(), chk.apiErrors.Load())
	if chk.calls.Load() < 100 {
		t.Errorf("checker made only %d business calls", chk.calls.Load())
	}
	if n := chk.apiErrors.Load(); n > 0 {
		t.Errorf("%d token requests to live replicas failed; last: %s", n, chk.lastErr)
	}
	for app, s := range map[string]wechattest.Stats{"wxa": a, "wxb": b} {
		if s.BusinessSuperseded != 0 || s.BusinessExpired != 0 || s.BusinessInvalid != 0 {
			t.Errorf("%s: business calls refused: %d superseded (40001), %d expired (42001), %d invalid", app, s.BusinessSuperseded, s.BusinessExpired, s.BusinessInvalid)
		}
		if s.BusinessOK == 0 {
			t.Errorf("%s: no successful business call", app)
		}
	}

	// One classic fetch per refresh: fetches are at least a refresh period
	// apart (a token is fetched again only once due), and never more than
	// a usable life apart (the checker never saw a lapse). Every fetch the
	// fake counted was stored (the record's version), and the fleet's own
	// counter agrees.
	maxFetches := 1 + int(elapsed/testRefreshPeriod)
	minFetches := int(elapsed / testUsable)
	t.Logf("wxa: %d classic fetches in %v; expected ≈ %.1f (one per %v + up to 0.2 s jitter), allowed [%d, %d]",
		a.QuotaUsed, elapsed.Round(time.Millisecond), float64(elapsed)/float64(testRefreshPeriod+100*time.Millisecond), testRefreshPeriod, minFetches, maxFetches)
	if a.QuotaUsed < minFetches || a.QuotaUsed > maxFetches {
		t.Errorf("wxa: %d upstream fetches in %v, want between %d and %d", a.QuotaUsed, elapsed, minFetches, maxFetches)
	}
	if a.Minted != a.QuotaUsed {
		t.Errorf("wxa: %d minted but %d fetched", a.Minted, a.QuotaUsed)
	}
	ctx := context.Background()
	rec, err := f.client.Get(ctx, "test:{wxa}:token").Result()
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.SplitN(rec, "|", 7)
	if len(parts) != 7 || parts[1] != fmt.Sprint(a.Minted) {
		t.Errorf("stored version %q, want %d (every minted token stored once)", parts[1], a.Minted)
	}
	fleetFetches := 0
	for _, app := range []string{"wxa"} {
		keys, _ := f.client.Keys(ctx, "test:{"+app+"}:fetches:*").Result()
		for _, k := range keys {
			n, _ := f.client.Get(ctx, k).Int()
			fleetFetches += n
		}
	}
	if fleetFetches != a.QuotaUsed {
		t.Errorf("fleet fetch counter %d, fake counted %d", fleetFetches, a.QuotaUsed)
	}

	// The survivor's status command agrees on the leader.
	code, out, errOut := runBin(t, baseEnv(), "status", "--config", f.configs[f.index(third)])
	if code != 0 || !strings.Contains(out, "leader: "+third) || !strings.Contains(out, "wxa") {
		t.Errorf("status: code %d\n%s\n%s", code, out, errOut)
	}
}

// runFor lets the fleet run for d (the system under test works meanwhile;
// nothing is being waited for).
func runFor(d time.Duration) { <-time.After(d) }
