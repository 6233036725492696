package chaos

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

// Fault kinds, in the order of one cycle of the schedule.
const (
	FaultUpstreamBusy      = "upstream-busy"           // errcode -1; nothing minted
	FaultUpstreamHTML502   = "upstream-html502"        // a proxy's 502 page; nothing minted
	FaultUpstreamTruncated = "upstream-truncated-json" // minted (the stored token is now superseded), reply unreadable
	FaultLeaderKill        = "leader-kill"             // SIGKILL the lease holder, restart it after the takeover
	FaultLockHolderStop    = "lock-holder-stop"        // SIGSTOP the process sending a fetch, past the lock's expiry
	FaultUpstreamLatency   = "upstream-latency"        // the reply comes 3/4 of the fetch timeout late
	FaultUpstreamLostReply = "upstream-lost-reply"     // minted, then the connection closes unanswered
	FaultRedisOutage       = "redis-outage"            // redis-server paused (SIGSTOP) for a few seconds
	FaultRedisRestart      = "redis-restart"           // redis-server killed and restarted empty: data loss
	FaultPartition         = "partition"               // one reader cut off Redis while another process replaces a token
	FaultLostAnnouncement  = "lost-announcement"       // one reader's pub/sub silenced while a token is replaced, then dropped
	FaultPoisonRecord      = "poison-record"           // malformed records written into live apps' record keys
)

// cycle is one round of the schedule. The poison comes first: its window
// lasts until every poisoned record is replaced, which a cache that leaves
// one in place stretches to the record's TTL.
var cycle = []string{
	FaultPoisonRecord, FaultUpstreamBusy, FaultUpstreamHTML502, FaultUpstreamTruncated, FaultLeaderKill, FaultPartition,
	FaultLockHolderStop, FaultUpstreamLatency, FaultLostAnnouncement, FaultUpstreamLostReply, FaultRedisOutage, FaultRedisRestart,
}

// FaultRecord is one planned fault and what became of it.
type FaultRecord struct {
	Kind    string        `json:"kind"`
	App     string        `json:"app,omitempty"` // the app an upstream fault is aimed at, or the app whose lock holder was frozen
	Planned time.Duration `json:"planned_offset_ns"`
	At      time.Time     `json:"at,omitzero"`    // when it was injected
	Ended   time.Time     `json:"ended,omitzero"` // end of its window: its effects should be over
	Applied bool          `json:"applied"`
	Target  string        `json:"target,omitempty"` // the process it hit
	Detail  string        `json:"detail,omitempty"`
	// Window is what the upstream answered business calls during [At, Ended].
	Window BusinessCounts `json:"window"`
	// Refetch lists the apps this fault may force to fetch once more.
	Refetch []string `json:"refetch,omitempty"`
	// Takeover is how long until another replica held the lease (leader
	// faults only).
	Takeover time.Duration `json:"takeover_ns,omitempty"`
	// EarlyMints is how many early mints (sooner than one refresh
	// interval after the app's previous) were charged to this fault.
	EarlyMints int  `json:"early_mints_charged"`
	DataLoss   bool `json:"data_loss,omitempty"`
	// Reader is the reader a partition or lost announcement targeted.
	Reader int `json:"reader,omitempty"`
	// Dead is how many business calls on a dead token the readers saw in
	// the window, outside every data-loss window, that concern this
	// fault: for its apps (App and Refetch) or its reader, or any call
	// for a fault of the whole fleet. DeadByReader splits them by reader.
	Dead         int         `json:"dead_charged"`
	DeadByReader map[int]int `json:"dead_charged_by_reader,omitempty"`

	// Proxy is what the target reader's Redis proxy did during a
	// partition or a lost announcement.
	Proxy *ProxyCounters `json:"proxy,omitempty"`
	// Superseded is, for a fault that had a token replaced, who used the
	// replaced token after its successor was minted.
	Superseded []TokenUse `json:"superseded_uses,omitempty"`
	// Poison is every record a poison-record fault wrote.
	Poison []*PoisonedRecord `json:"poison,omitempty"`
}

// plan lays out the schedule: whole cycles spread between a warm-up and a
// tail long enough for the last fault's effects to show.
func plan(cfg *Config) []*FaultRecord {
	if !cfg.Faults {
		return nil
	}
	warmup := 4 * time.Second
	tail := cfg.Grace + cfg.Cache.NearMaxAge + 4*time.Second
	span := cfg.Duration - warmup - tail
	if span <= 0 {
		return nil
	}
	const minSpacing = 5500 * time.Millisecond
	cycles := max(1, int(span/(time.Duration(len(cycle))*8*time.Second)))
	n := cycles * len(cycle)
	step := span / time.Duration(max(n-1, 1))
	if step < minSpacing {
		step = minSpacing
	}
	var out []*FaultRecord
	upstreamN := 0
	for i := 0; i < n; i++ {
		f := &FaultRecord{Kind: cycle[i%len(cycle)], Planned: warmup + time.Duration(i)*step}
		if f.Planned > cfg.Duration-tail {
			break
		}
		if isUpstreamFault(f.Kind) {
			f.App = AppID(upstreamN % cfg.Apps)
			upstreamN++
		}
		out = append(out, f)
	}
	return out
}

func isUpstreamFault(kind string) bool {
	switch kind {
	case FaultUpstreamBusy, FaultUpstreamHTML502, FaultUpstreamTruncated, FaultUpstreamLatency, FaultUpstreamLostReply:
		return true
	}
	return false
}

// inject applies f and returns when its window is over (or ctx ends).
func (r *run) inject(ctx context.Context, f *FaultRecord) {
	f.At = time.Now()
	r.logf("fault %-24s %s injected%s", f.Kind, r.offset(f.At), appSuffix(f.App))
	switch {
	case isUpstreamFault(f.Kind):
		r.injectUpstream(ctx, f)
	case f.Kind == FaultLeaderKill:
		r.injectLeaderKill(ctx, f)
	case f.Kind == FaultLockHolderStop:
		r.injectLockHolderStop(ctx, f)
	case f.Kind == FaultRedisOutage:
		r.injectRedisOutage(ctx, f)
	case f.Kind == FaultRedisRestart:
		r.injectRedisRestart(ctx, f)
	case f.Kind == FaultPartition:
		r.injectPartition(ctx, f)
	case f.Kind == FaultLostAnnouncement:
		r.injectLostAnnouncement(ctx, f)
	case f.Kind == FaultPoisonRecord:
		r.injectPoison(ctx, f)
	}
	if f.Ended.IsZero() {
		f.Ended = time.Now()
	}
	status := "applied"
	if !f.Applied {
		status = "NOT APPLIED"
	}
	r.logf("fault %-24s %s %s: %s", f.Kind, r.offset(time.Now()), status, f.Detail)
}

// concerns reports whether a dead call is this fault's business: one of
// its apps, its reader, or anything for a fault of the whole fleet.
func (f *FaultRecord) concerns(d DeadCall) bool {
	if f.Reader != 0 && d.Reader == f.Reader {
		return true
	}
	var apps []string
	if f.App != "" {
		apps = strings.Split(f.App, ",")
	}
	apps = append(apps, f.Refetch...)
	if f.Reader == 0 && f.App == "" {
		return true // leader kill, Redis outage or restart: every app
	}
	return slices.Contains(apps, d.App)
}

func appSuffix(app string) string {
	if app == "" {
		return ""
	}
	return " (app " + app + ")"
}

// settle is how long after a fault's last action a dead token could still
// be handed out and used: the grace, a near-cache period and a second.
func (r *run) settle() time.Duration { return r.cfg.Grace + r.cfg.Cache.NearMaxAge + time.Second }

func (r *run) injectUpstream(ctx context.Context, f *FaultRecord) {
	wf := wechattest.Fault{AppID: f.App, Endpoint: "/cgi-bin/token"}
	switch f.Kind {
	case FaultUpstreamBusy:
		wf.Kind = wechattest.FaultBusy
	case FaultUpstreamHTML502:
		wf.Kind = wechattest.FaultHTML502
	case FaultUpstreamTruncated:
		wf.Kind = wechattest.FaultTruncatedJSON
	case FaultUpstreamLostReply:
		wf.Kind = wechattest.FaultLostReply
	case FaultUpstreamLatency:
		wf.Kind = wechattest.FaultLatency
		wf.Latency = r.cfg.Cache.FetchTimeout * 3 / 4
	}
	before := len(r.up.tokenCalls()[f.App])
	defer r.claim(f.App)()
	r.up.fake.InjectFault(wf)
	// The fault is consumed by the app's next token request: wait for it,
	// at most two refresh intervals.
	deadline := time.Now().Add(2 * r.cfg.RefreshInterval())
	for r.up.fake.PendingFaults() > 0 || len(r.up.tokenCalls()[f.App]) == before {
		if !sleepCtx(ctx, 50*time.Millisecond) || time.Now().After(deadline) {
			f.Detail = "the app made no token request in time: fault still queued"
			return
		}
	}
	calls := r.up.tokenCalls()[f.App]
	hit := calls[before].at
	f.Applied = true
	f.Detail = fmt.Sprintf("consumed by the token request of %s", r.offset(hit))
	if f.Kind != FaultUpstreamLatency { // a late but good reply forces no refetch
		f.Refetch = []string{f.App}
	}
	sleepCtx(ctx, time.Until(hit.Add(r.settle())))
	f.Ended = time.Now()
}

// appsWithIntents lists the apps with a fetch registered in Redis now. A
// process stopped between its fetch's begin (which caps the stored token)
// and its send has no request at the upstream to show for it, yet its cap
// may make the app fetch once more, early: by design, since its fetch might
// still have been sent.
func (r *run) appsWithIntents(ctx context.Context) []string {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	all := AppIDs(r.cfg.Apps)
	pipe := r.client.Pipeline()
	exists := make([]*redis.IntCmd, len(all))
	for i, app := range all {
		exists[i] = pipe.Exists(ctx, tokencache.IntentsKey(r.cfg.KeyPrefix, app))
	}
	_, _ = pipe.Exec(ctx) // an app whose answer is an error is not counted
	var apps []string
	for i, app := range all {
		if exists[i].Val() > 0 {
			apps = append(apps, app)
		}
	}
	return apps
}

// mergeApps is a with the apps of b it lacks.
func mergeApps(a, b []string) []string {
	for _, app := range b {
		if !slices.Contains(a, app) {
			a = append(a, app)
		}
	}
	return a
}

func (r *run) injectLeaderKill(ctx context.Context, f *FaultRecord) {
	if len(r.replicas) == 0 {
		f.Detail = "skipped: no refresher replicas in this run"
		return
	}
	leader, _, ok := r.watch.waitLeader(ctx, "", 3*r.cfg.Lease.Duration)
	if !ok {
		f.Detail = "no replica held the lease"
		return
	}
	rep := r.replicaByIdentity(leader)
	var proc *child
	if rep != nil {
		proc = rep.current()
	}
	if proc == nil || proc.exited() {
		f.Detail = "lease held by " + strconv.Quote(leader) + ", which is not a running replica of this run"
		return
	}
	ports, perr := portsTo(proc.pid(), r.up.port)
	killedAt := time.Now()
	if err := proc.signal(syscall.SIGKILL); err != nil {
		f.Detail = err.Error()
		return
	}
	proc.wait(5 * time.Second)
	f.Applied = true
	f.At = killedAt
	f.Target = fmt.Sprintf("%s (pid %d)", rep.identity, proc.pid())
	// A fetch the leader had in flight may have minted a token nobody
	// stored: that app may need one more fetch.
	if perr != nil {
		f.Detail = "cannot tell its fetches in flight: " + perr.Error() + "; "
	}
	f.Refetch = mergeApps(r.up.appsInFlight(killedAt, killedAt, ports), r.appsWithIntents(ctx))
	next, at, ok := r.watch.waitLeader(ctx, leader, 3*r.cfg.Lease.Duration+2*time.Second)
	if ok {
		f.Takeover = at.Sub(killedAt)
		f.Detail += fmt.Sprintf("%s took the lease %v after the kill", next, f.Takeover.Round(time.Millisecond))
	} else {
		f.Detail += "no other replica took the lease within " + (3*r.cfg.Lease.Duration + 2*time.Second).String()
	}
	if err := r.startReplica(rep); err != nil {
		f.Detail += "; restart failed: " + err.Error()
	} else {
		f.Detail += fmt.Sprintf("; restarted as pid %d", rep.current().pid())
	}
	sleepCtx(ctx, time.Second)
	f.Ended = time.Now()
}

// inFlightSlack is how long after its reply a fetch may still be writing
// its token to Redis, on a loaded machine.
const inFlightSlack = 250 * time.Millisecond

// holderHit is what the upstream hook found: the process that sent a
// token request, frozen before the fake saw the request.
type holderHit struct {
	app     string
	pid     int
	name    string
	stopped time.Time
}

func (r *run) injectLockHolderStop(ctx context.Context, f *FaultRecord) {
	hits := make(chan holderHit, 1)
	var misses atomic.Int64
	hook := func(app string, port int) bool {
		if r.claimed(app) {
			// This request may be the one an upstream fault hits (or
			// one a partition, lost announcement or poison caused): two
			// faults on one fetch would blur what each costs.
			return false
		}
		h := holderHit{app: app}
		c, err := r.sender(port)
		if err == nil {
			h.pid, h.name = c.pid(), c.name
			err = c.signal(syscall.SIGSTOP)
			h.stopped = time.Now()
		}
		if err != nil {
			return misses.Add(1) >= 20 // give up on this hook only after many misses
		}
		hits <- h
		return true
	}
	r.up.hook.Store(&hook)
	defer r.up.hook.Store(nil)
	wait := time.NewTimer(2 * r.cfg.RefreshInterval())
	defer wait.Stop()
	var h holderHit
	select {
	case h = <-hits:
	case <-wait.C:
	case <-ctx.Done():
	}
	r.up.hook.Store(nil)
	if h.pid == 0 {
		// A hook that was already running may still freeze someone: it
		// must be resumed, so wait for it briefly.
		late := time.NewTimer(500 * time.Millisecond)
		defer late.Stop()
		select {
		case h = <-hits:
		case <-late.C:
			f.Detail = fmt.Sprintf("no token request whose sender could be found in time (%d misses)", misses.Load())
			return
		}
	}
	f.Applied, f.App, f.At = true, h.app, h.stopped
	f.Target = fmt.Sprintf("%s (pid %d)", h.name, h.pid)
	lockTTL := r.lockTTL(h.app)
	// Every fetch the frozen process has in flight (it may hold several
	// apps' locks) may force that app to fetch once more.
	f.Refetch = []string{h.app}
	if ports, err := portsTo(h.pid, r.up.port); err == nil {
		f.Refetch = mergeApps(f.Refetch, r.up.appsInFlight(h.stopped, h.stopped, ports))
	}
	f.Refetch = mergeApps(f.Refetch, r.appsWithIntents(ctx))
	r.noteStopped(h.pid, h.stopped, h.stopped.Add(r.cfg.StopFor))
	leader, _ := r.watch.leader()
	sleepCtx(context.WithoutCancel(ctx), r.cfg.StopFor) // must resume it even when the run is cut short
	c := r.procs.running()[h.pid]
	resumed := time.Now()
	if c != nil {
		if err := c.signal(syscall.SIGCONT); err != nil {
			f.Detail = "SIGCONT failed: " + err.Error()
		}
	}
	f.Detail = fmt.Sprintf("froze %s while it fetched for %s (fetch lock %s), resumed after %v",
		f.Target, h.app, lockTTL, resumed.Sub(h.stopped).Round(time.Millisecond))
	if rep := r.replicaByPID(h.pid); rep != nil && rep.identity == leader {
		if cur, at, ok := r.watch.waitLeader(ctx, leader, time.Millisecond); ok && at.After(h.stopped) {
			f.Takeover = at.Sub(h.stopped)
			f.Detail += fmt.Sprintf("; it was the leader: %s took the lease after %v", cur, f.Takeover.Round(time.Millisecond))
		}
	}
	sleepCtx(ctx, r.settle())
	f.Ended = time.Now()
}

// lockTTL describes the fetch lock of app as Redis has it now.
func (r *run) lockTTL(app string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	ttl, err := r.client.PTTL(ctx, tokencache.LockKey(r.cfg.KeyPrefix, app)).Result()
	switch {
	case err != nil:
		return "unreadable: " + err.Error()
	case ttl < 0:
		return "NOT HELD"
	}
	return "held, expiring in " + ttl.Round(time.Millisecond).String()
}

func (r *run) injectRedisOutage(ctx context.Context, f *FaultRecord) {
	if err := r.redis.pause(); err != nil {
		f.Detail = err.Error()
		return
	}
	f.Applied = true
	f.Target = fmt.Sprintf("redis-server (pid %d)", r.redis.current().pid())
	sleepCtx(context.WithoutCancel(ctx), r.cfg.RedisOutage)
	if err := r.redis.resume(); err != nil {
		f.Detail = "resume failed: " + err.Error()
		return
	}
	resumed := time.Now()
	f.Detail = fmt.Sprintf("paused for %v", resumed.Sub(f.At).Round(time.Millisecond))
	// Only a fetch in flight when Redis stopped can fail to store its
	// token (a classic fetch needs Redis for its lock and fencing first):
	// one whose reply came less than a moment before the pause, so its
	// write may not have reached Redis.
	f.Refetch = r.up.appsInFlight(f.At.Add(-inFlightSlack), f.At.Add(inFlightSlack), nil)
	sleepCtx(ctx, r.settle())
	f.Ended = time.Now()
}

func (r *run) injectRedisRestart(ctx context.Context, f *FaultRecord) {
	f.Target = fmt.Sprintf("redis-server (pid %d)", r.redis.current().pid())
	if err := r.redis.restart(); err != nil {
		f.Detail = "restart failed: " + err.Error()
		return
	}
	f.Applied, f.DataLoss = true, true
	f.Detail = fmt.Sprintf("killed and restarted empty on port %d in %v (pid %d)", r.redis.port,
		time.Since(f.At).Round(time.Millisecond), r.redis.current().pid())
	f.Refetch = append([]string(nil), r.up.apps...)
	sleepCtx(ctx, r.settle())
	f.Ended = time.Now()
}

// sleepCtx sleeps d unless ctx ends first; it reports whether it slept.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// sender finds the child that owns the client end of a connection to the
// fake, by the connection's source port.
func (r *run) sender(port int) (*child, error) {
	inode, err := socketInode(port, r.up.port)
	if err != nil {
		return nil, err
	}
	running := r.procs.running()
	pids := make([]int, 0, len(running))
	for pid, c := range running {
		if c != r.redis.current() {
			pids = append(pids, pid)
		}
	}
	pid, err := ownerOf(pids, inode)
	if err != nil {
		return nil, err
	}
	return running[pid], nil
}

// claim marks app as acted on by a fault until the returned func is
// called; other faults leave a claimed app alone where they can choose.
func (r *run) claim(app string) (release func()) {
	r.claimsMu.Lock()
	defer r.claimsMu.Unlock()
	if r.claims == nil {
		r.claims = map[string]int{}
	}
	r.claims[app]++
	var once sync.Once
	return func() {
		once.Do(func() {
			r.claimsMu.Lock()
			defer r.claimsMu.Unlock()
			if r.claims[app]--; r.claims[app] <= 0 {
				delete(r.claims, app)
			}
		})
	}
}

func (r *run) claimed(app string) bool {
	r.claimsMu.Lock()
	defer r.claimsMu.Unlock()
	return r.claims[app] > 0
}

// pickApps chooses n distinct apps, unclaimed ones first, starting from a
// position that moves on with every call so successive faults spread.
func (r *run) pickApps(n int) []string {
	apps := AppIDs(r.cfg.Apps)
	r.claimsMu.Lock()
	start := r.appCursor
	r.appCursor += n
	r.claimsMu.Unlock()
	var free, busy []string
	for i := range apps {
		app := apps[(start+i)%len(apps)]
		if r.claimed(app) {
			busy = append(busy, app)
		} else {
			free = append(free, app)
		}
	}
	return append(free, busy...)[:min(n, len(apps))]
}
