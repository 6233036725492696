package chaos

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// TokenUse is how one process used a replaced token after its successor
// was minted, as the upstream saw it.
type TokenUse struct {
	Process string        `json:"process"`
	Calls   int           `json:"calls"`
	OK      int           `json:"ok"`
	Dead    int           `json:"dead"`
	First   time.Duration `json:"first_after_mint_ns"`
	Last    time.Duration `json:"last_after_mint_ns"`
}

// replacement is a token another process replaced on the run's request.
type replacement struct {
	old    string    // the token replaced (never printed)
	mintAt time.Time // when the fake received the request that minted its successor
	by     string    // the process that fetched
}

// liveToken reads app's current token straight from Redis.
func (r *run) liveToken(ctx context.Context, app string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	v, err := r.client.Get(ctx, recordKey(r.cfg.KeyPrefix, app)).Result()
	if err != nil {
		return "", fmt.Errorf("read %s's record: %w", app, err)
	}
	tok := tokenOfRecord(v)
	if tok == "" {
		return "", fmt.Errorf("%s's record is not one this run can read", app)
	}
	return tok, nil
}

// replaceToken has another process than the target replace app's token:
// a passive refresh with the current token (replacerCache), or without
// replicas the app's next refresh. It returns once the
// fake has minted the successor.
func (r *run) replaceToken(ctx context.Context, app string) (replacement, error) {
	old, err := r.liveToken(ctx, app)
	if err != nil {
		return replacement{}, err
	}
	before := len(r.up.tokenCalls()[app])
	wait := r.cfg.RefreshInterval() + r.cfg.Cache.FetchTimeout + time.Second // the next refresh
	via := "its next refresh"
	if len(r.replicas) > 0 {
		c, err := r.replacerCache()
		if err != nil {
			return replacement{}, err
		}
		ictx, cancel := context.WithTimeout(ctx, r.cfg.Cache.LockTTL+r.cfg.Cache.FetchTimeout)
		_, err = c.Invalidate(ictx, app, old)
		cancel()
		if err != nil {
			return replacement{}, fmt.Errorf("invalidate %s: %w", app, err)
		}
		via = "a passive refresh by another process"
		wait = 2 * time.Second // Invalidate returned after the store: the mint is recorded by now, or nearly
	}
	deadline := time.Now().Add(wait)
	for {
		calls := r.up.tokenCalls()[app]
		for _, c := range calls[min(before, len(calls)):] {
			if c.minted > 0 {
				by := via
				if c.who != "" {
					by += " (fetched by " + c.who + ")"
				}
				return replacement{old: old, mintAt: c.at, by: by}, nil
			}
		}
		if time.Now().After(deadline) {
			return replacement{}, fmt.Errorf("no token minted for %s within %v", app, wait)
		}
		if !sleepCtx(ctx, 20*time.Millisecond) {
			return replacement{}, ctx.Err()
		}
	}
}

// replacerCache is a cache of the orchestrator's own, on the run's Redis,
// whose Source cannot ask WeChat about a reported token: its Invalidate of
// the current token always refreshes it (one fetch, fenced, under the
// app's lock), as an app instance whose check of the token failed would. A
// replica's HTTP invalidate would find the token alive and keep it.
func (r *run) replacerCache() (*tokencache.Cache, error) {
	r.replacerOnce.Do(func() {
		apps := AppIDs(r.cfg.Apps)
		wapps := make([]wechat.App, len(apps))
		for i, a := range apps {
			wapps[i] = wechat.App{ID: a, Secret: wechat.Secret(r.secret), Mode: wechat.Classic}
		}
		src, err := wechat.NewSource(wechat.NewClient(wechat.WithBaseURL(r.up.url)), wapps...)
		if err != nil {
			r.replacerErr = err
			return
		}
		r.replacer, r.replacerErr = tokencache.New(r.client, fetchOnly{src},
			r.cfg.Cache.options(r.cfg.KeyPrefix, r.cfg.Grace, tokencache.WithPassiveRefreshLimit(0, 0, 0))...)
	})
	return r.replacer, r.replacerErr
}

// fetchOnly hides a Source's other methods (Verify among them).
type fetchOnly struct{ src *wechat.Source }

func (f fetchOnly) Fetch(ctx context.Context, appID string) (wechat.Token, error) {
	return f.src.Fetch(ctx, appID)
}

// pickReader chooses the next reader that is running, not frozen and not
// already cut by another fault, and claims it until release is called.
func (r *run) pickReader() (rp *readerProc, release func()) {
	r.claimsMu.Lock()
	defer r.claimsMu.Unlock()
	if r.readersCut == nil {
		r.readersCut = map[int]bool{}
	}
	for i := range r.readers {
		rp := r.readers[(r.readerCursor+i)%len(r.readers)]
		if !rp.proc.exited() && !r.readersCut[rp.id] && !r.frozen(rp.proc.pid(), time.Now(), time.Now()) {
			r.readerCursor += i + 1
			r.readersCut[rp.id] = true
			return rp, func() {
				r.claimsMu.Lock()
				defer r.claimsMu.Unlock()
				delete(r.readersCut, rp.id)
			}
		}
	}
	return nil, func() {}
}

// nextPartitionMode alternates black holes (the nastier: the client
// waits for its timeouts) and refusals.
func (r *run) nextPartitionMode() proxyMode {
	r.claimsMu.Lock()
	defer r.claimsMu.Unlock()
	r.partitions++
	if r.partitions%2 == 0 {
		return proxyRefuse
	}
	return proxyBlackhole
}

// tokenUses resolves a token watch's source ports to processes.
func (r *run) tokenUses(uses map[int]portUse, since time.Time) []TokenUse {
	byProc := map[string]*TokenUse{}
	for port, u := range uses {
		name := fmt.Sprintf("port %d (process gone)", port)
		if c, err := r.sender(port); err == nil {
			name = c.name
		}
		t := byProc[name]
		if t == nil {
			t = &TokenUse{Process: name, First: u.first.Sub(since)}
			byProc[name] = t
		}
		t.Calls += u.calls
		t.OK += u.ok
		t.Dead += u.dead
		t.First = min(t.First, u.first.Sub(since))
		t.Last = max(t.Last, u.last.Sub(since))
	}
	out := make([]TokenUse, 0, len(byProc))
	for _, t := range byProc {
		out = append(out, *t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Last > out[j].Last })
	return out
}

// injectPartition cuts one reader off Redis, has another process replace
// an app's token while it is cut, and keeps the cut until the replaced
// token is dead at the fake and a moment more: a correct reader stops
// handing that token out before then, though it never heard of the
// change. Partitions alternate between a black hole (connections accepted,
// nothing forwarded) and a refusal (connections closed).
func (r *run) injectPartition(ctx context.Context, f *FaultRecord) {
	rp, release := r.pickReader()
	defer release()
	if rp == nil {
		f.Detail = "no running reader to cut"
		return
	}
	f.App, f.Reader = r.pickApps(1)[0], rp.id
	defer r.claim(f.App)()
	mode := r.nextPartitionMode()
	f.Target = fmt.Sprintf("%s (pid %d)", rp.proxy.name, rp.proc.pid())
	before := rp.proxy.counters()
	ports, _ := portsTo(rp.proc.pid(), r.up.port)
	rp.proxy.cut(mode)
	f.At = time.Now()
	r.logf("fault %-24s %s %s cut off Redis (%v)", f.Kind, r.offset(f.At), rp.proxy.name, mode)
	rep, err := r.replaceToken(ctx, f.App)
	if err != nil {
		rp.proxy.heal()
		f.Detail = fmt.Sprintf("cut %s (%v), but the token was not replaced: %v; healed", rp.proxy.name, mode, err)
		return
	}
	w := r.up.watchToken(rep.old, rep.mintAt)
	// The replaced token dies one grace after its successor's mint; the
	// reader then needs a near-cache period and a second to show whether
	// it still hands it out.
	sleepCtx(ctx, time.Until(rep.mintAt.Add(r.cfg.Grace+r.cfg.Cache.NearMaxAge+time.Second)))
	rp.proxy.heal()
	healed := time.Now()
	d := rp.proxy.counters().sub(before)
	f.Proxy = &d
	f.Applied = d.Cut+d.Refused+d.BlackHoled > 0
	// A fetch the reader had in flight at the cut could not store its
	// token: the app may need one more.
	f.Refetch = []string{f.App}
	for _, app := range r.up.appsInFlight(f.At.Add(-inFlightSlack), f.At.Add(time.Second), ports) {
		if app != f.App {
			f.Refetch = append(f.Refetch, app)
		}
	}
	f.Detail = fmt.Sprintf("%s cut off Redis (%v) for %v; meanwhile %s replaced %s's token (minted %s; the old one dies at the fake at %s); proxy: %d connections cut, %d refused, %d black-holed, %d bytes swallowed",
		rp.proxy.name, mode, healed.Sub(f.At).Round(time.Millisecond), rep.by, f.App, r.offset(rep.mintAt),
		r.offset(rep.mintAt.Add(r.cfg.Grace)), d.Cut, d.Refused, d.BlackHoled, d.Swallowed)
	if !f.Applied {
		f.Detail += "; THE CUT HIT NO CONNECTION"
	}
	sleepCtx(ctx, r.settle())
	f.Superseded = r.tokenUses(r.up.unwatch(w), rep.mintAt)
	f.Ended = time.Now()
}

// injectLostAnnouncement silences one reader's pub/sub connections while
// another process replaces an app's token, so the change messages (the
// cap of the old token, then the new one) never reach it; then it drops
// those connections, and go-redis resubscribes. The reader keeps its
// other connections: it must learn of the change by reading Redis before
// the old token dies.
func (r *run) injectLostAnnouncement(ctx context.Context, f *FaultRecord) {
	rp, release := r.pickReader()
	defer release()
	if rp == nil {
		f.Detail = "no running reader to silence"
		return
	}
	f.App, f.Reader = r.pickApps(1)[0], rp.id
	defer r.claim(f.App)()
	f.Target = fmt.Sprintf("%s (pid %d)", rp.proxy.name, rp.proc.pid())
	if !waitFor(2*time.Second, func() bool { return rp.proxy.pubsubConns() > 0 }) {
		f.Detail = rp.proxy.name + " has no pub/sub connection open"
		return
	}
	subs := rp.proxy.pubsubConns()
	before := rp.proxy.counters()
	rp.proxy.silencePubSub(f.App)
	f.At = time.Now()
	rep, err := r.replaceToken(ctx, f.App)
	if err != nil {
		rp.proxy.dropPubSub()
		f.Detail = fmt.Sprintf("silenced %s's pub/sub, but the token was not replaced: %v; dropped its pub/sub connections", rp.proxy.name, err)
		return
	}
	w := r.up.watchToken(rep.old, rep.mintAt)
	// The change messages were published before the replacement's answer;
	// give them a moment to reach the silenced connection.
	waitFor(time.Second, func() bool { return rp.proxy.counters().sub(before).MutedApp >= 2 })
	time.Sleep(100 * time.Millisecond)
	dropped := rp.proxy.dropPubSub()
	droppedAt := time.Now()
	resubscribed := waitFor(5*time.Second, func() bool { return rp.proxy.counters().sub(before).Subscribes >= int64(dropped) })
	resubAt := time.Now()
	d := rp.proxy.counters().sub(before)
	f.Proxy = &d
	f.Refetch = []string{f.App}
	f.Applied = d.MutedApp > 0 && dropped > 0 && resubscribed
	f.Detail = fmt.Sprintf("silenced %s's %d pub/sub connection(s) while %s replaced %s's token (minted %s): %d change message(s) for the app swallowed (%d in all); dropped %d connection(s) %v after the mint",
		rp.proxy.name, subs, rep.by, f.App, r.offset(rep.mintAt), d.MutedApp, d.MutedMsgs, dropped, droppedAt.Sub(rep.mintAt).Round(time.Millisecond))
	if resubscribed {
		f.Detail += fmt.Sprintf("; it resubscribed %v later", resubAt.Sub(droppedAt).Round(time.Millisecond))
	} else {
		f.Detail += "; IT DID NOT RESUBSCRIBE within 5s"
	}
	if d.MutedApp == 0 {
		f.Detail += "; NO CHANGE MESSAGE WAS SWALLOWED"
	}
	sleepCtx(ctx, r.settle())
	f.Superseded = r.tokenUses(r.up.unwatch(w), rep.mintAt)
	f.Ended = time.Now()
}
