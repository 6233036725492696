package tokencache_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/internal/redistest"
	"github.com/tokenkeeper/tokenkeeper/internal/tktest/fleet"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

// The cache, its redsync lock and its change announcements on a real
// 3-master Redis Cluster, every process with its own cluster client. The
// apps are chosen so that each master holds one, so every script, lock and
// PUBLISH runs on every master. One cluster serves every subtest (each
// start costs Redis's 2 s writable delay); each subtest has its own key
// prefix and its own fake WeChat.
func TestOnRedisCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	apps := clusterAppsOnEveryNode(t, cl)
	t.Logf("apps by master: %v", apps)
	t.Run("herd", func(t *testing.T) { testClusterHerd(t, cl, apps) })
	t.Run("announcements", func(t *testing.T) { testClusterAnnouncements(t, cl, apps) })
	t.Run("waiters", func(t *testing.T) { testClusterWaiters(t, cl, apps) })
	t.Run("stalled writer", func(t *testing.T) { testClusterStalledWriter(t, cl, apps) })
	// Last: it breaks the cluster for good.
	t.Run("master down", func(t *testing.T) { testClusterMasterDown(t, cl, apps) })
}

const clusterSecret = "cluster-secret-0123456789abcdef"

// clusterAppsOnEveryNode returns one app ID per master, in node order: the
// master that serves the slot of the app's {appID} hash tag.
func clusterAppsOnEveryNode(t *testing.T, cl *redistest.Cluster) []string {
	t.Helper()
	c := cl.Client()
	apps := make([]string, len(cl.Addrs()))
	found := 0
	for i := 0; i < 1000 && found < len(apps); i++ {
		app := fmt.Sprintf("wxcluster%d", i)
		slot, err := c.ClusterKeySlot(context.Background(), "tokenkeeper:{"+app+"}:token").Result()
		if err != nil {
			t.Fatalf("CLUSTER KEYSLOT: %v", err)
		}
		if n := cl.NodeOfSlot(int(slot)); apps[n] == "" {
			apps[n] = app
			found++
		}
	}
	if found < len(apps) {
		t.Fatalf("no app ID for every master among 1000: %q", apps)
	}
	return apps
}

// clusterSource is a wechat.Source whose fetches a test can stall, per app,
// after the reply came back.
type clusterSource struct {
	inner *wechat.Source
	calls map[string]*atomic.Int64 // per app; the map is never written after creation
	after func(app string, call int64)
}

func (s *clusterSource) Fetch(ctx context.Context, app string) (wechat.Token, error) {
	n := s.calls[app].Add(1)
	tok, err := s.inner.Fetch(ctx, app)
	if s.after != nil {
		s.after(app, n)
	}
	return tok, err
}

func (s *clusterSource) Mode(app string) wechat.Mode { return s.inner.Mode(app) }

// clusterFleet is processes sharing a Redis Cluster and a fake WeChat.
type clusterFleet struct {
	*fleet.Fleet
	src *clusterSource
}

func newClusterFleet(t *testing.T, cl *redistest.Cluster, apps []string, instances int, fakeOpts []wechattest.Option, opts ...tokencache.Option) *clusterFleet {
	t.Helper()
	var wapps []wechat.App
	for _, app := range apps {
		fakeOpts = append(fakeOpts, wechattest.WithApp(app, clusterSecret))
		wapps = append(wapps, wechat.App{ID: app, Secret: clusterSecret, Mode: wechat.Classic})
	}
	f := &clusterFleet{Fleet: fleet.New(t, wechattest.New(t, fakeOpts...), apps...)}
	inner, err := wechat.NewSource(wechat.NewClient(wechat.WithBaseURL(f.Fake.URL())), wapps...)
	if err != nil {
		t.Fatal(err)
	}
	f.src = &clusterSource{inner: inner, calls: map[string]*atomic.Int64{}}
	for _, app := range apps {
		f.src.calls[app] = &atomic.Int64{}
	}
	for i := 0; i < instances; i++ {
		f.Add(tokencache.New(cl.Client(), f.src, opts...))
	}
	return f
}

func testClusterHerd(t *testing.T, cl *redistest.Cluster, apps []string) {
	const prefix = "clherd:"
	f := newClusterFleet(t, cl, apps, 6,
		[]wechattest.Option{wechattest.WithLifetime(lifetime), wechattest.WithGrace(grace)},
		append(cacheOptions(), tokencache.WithKeyPrefix(prefix))...)

	// Cold start: 6 processes x 20 callers per app, released together.
	cold := f.Herd(20, 2*time.Second, func(ctx context.Context, c *tokencache.Cache, app string) (tokencache.Token, error) {
		return c.Token(ctx, app)
	})
	if n := f.TokenErrs.Load(); n != 0 {
		t.Errorf("cold start: %d callers got an error, e.g. %v", n, f.ErrSamples())
	}
	cold.Check(t, "cold start", apps)
	for _, app := range apps {
		if n := f.Fake.Stats(app).Minted; n != 1 {
			t.Errorf("cold start: %s: %d upstream fetches for 120 callers in 6 processes, want 1", app, n)
		}
	}

	// Every process reports the current token bad at once: one fetch per app.
	ctx := context.Background()
	current := map[string]string{}
	for _, app := range apps {
		tok, err := f.Caches[0].Token(ctx, app)
		if err != nil {
			t.Fatal(err)
		}
		current[app] = tok.Value
	}
	replaced := f.Herd(10, 2*time.Second, func(ctx context.Context, c *tokencache.Cache, app string) (tokencache.Token, error) {
		tok, err := c.Invalidate(ctx, app, current[app])
		if err == nil && tok.Value == current[app] {
			t.Errorf("%s: Invalidate returned the token reported bad", app)
		}
		return tok, err
	})
	if n := f.TokenErrs.Load(); n != 0 {
		t.Errorf("invalidate: %d callers got an error, e.g. %v", n, f.ErrSamples())
	}
	replaced.Check(t, "invalidate", apps)
	for _, app := range apps {
		if n := f.Fake.Stats(app).Minted; n != 2 {
			t.Errorf("invalidate: %s: %d upstream fetches in all, want 2 (1 + 1 for 60 reports of the same token)", app, n)
		}
	}

	// Every key of an app lives on the master of its hash tag, and only
	// there: the scripts' KEYS never straddle slots.
	for node, app := range apps {
		keys, err := cl.NodeClient(node).Keys(ctx, prefix+"*").Result()
		if err != nil {
			t.Fatal(err)
		}
		tokenKey := false
		for _, k := range keys {
			if !strings.HasPrefix(k, prefix+"{"+app+"}:") {
				t.Errorf("master %d (app %s) holds %q of another app", node, app, k)
			}
			tokenKey = tokenKey || k == prefix+"{"+app+"}:token"
		}
		if !tokenKey {
			t.Errorf("master %d holds no token record for %s; its keys: %q", node, app, keys)
		}
	}

	// Steady load through two refreshes per app: one fetch per refresh,
	// every mint stored, no dead token handed out.
	start := time.Now()
	f.Run(3500*time.Millisecond, 3, 50*time.Millisecond, nil)
	elapsed := time.Since(start)
	f.AssertNoDeadToken()
	if n := f.TokenErrs.Load(); n != 0 {
		t.Errorf("%d callers got an error, e.g. %v", n, f.ErrSamples())
	}
	if n := f.Refused(); n != 0 {
		t.Errorf("%d fetched tokens were refused at their write: a fetch was wasted", n)
	}
	rotations := int(elapsed / dueAfter)
	for _, app := range apps {
		st := f.Fake.Stats(app)
		rec, found, err := f.Caches[0].Admin().Peek(ctx, app)
		if err != nil || !found {
			t.Fatalf("%s: peek: %v %v", app, found, err)
		}
		if int64(st.Minted) != rec.Version {
			t.Errorf("%s: minted %d, stored %d versions: a fetch was wasted", app, st.Minted, rec.Version)
		}
		if got := st.Minted - 2; got < rotations-1 || got > rotations+1 {
			t.Errorf("%s: %d refreshes in %v of load, want %d±1 (one per %v)", app, got, elapsed.Round(time.Millisecond), rotations, dueAfter)
		}
		t.Logf("%s: minted %d, business ok %d", app, st.Minted, st.BusinessOK)
	}
}

// A process learns of another's new token from the cluster's pub/sub, not
// from its near cache running out: with a one-minute near max age it must
// see the replacement at once.
func testClusterAnnouncements(t *testing.T, cl *redistest.Cluster, apps []string) {
	f := newClusterFleet(t, cl, apps, 2, nil,
		tokencache.WithKeyPrefix("clann:"), tokencache.WithNearMaxAge(time.Minute))
	writer, reader := f.Caches[0], f.Caches[1]
	ctx := context.Background()
	for _, app := range apps {
		old, err := writer.Token(ctx, app)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := reader.Token(ctx, app); err != nil || got.Value != old.Value {
			t.Fatalf("%s: reader got %s, %v; want the writer's token", app, wechat.Fingerprint(got.Value), err)
		}
		// The reader's copy now serves from memory.
		misses := reader.Admin().Stats().NearMisses
		if got, _ := reader.Token(ctx, app); got.Value != old.Value || reader.Admin().Stats().NearMisses != misses {
			t.Fatalf("%s: the reader's second Token was not a near hit", app)
		}
		start := time.Now()
		fresh, err := writer.Invalidate(ctx, app, old.Value)
		if err != nil || fresh.Value == old.Value {
			t.Fatalf("%s: Invalidate = %s, %v; want a new token", app, wechat.Fingerprint(fresh.Value), err)
		}
		var seen tokencache.Token
		for polls := 0; polls < 400 && time.Since(start) < 2*time.Second; polls++ {
			if seen, err = reader.Token(ctx, app); err == nil && seen.Value == fresh.Value {
				break
			}
			time.Sleep(5 * time.Millisecond) // polling the reader's memory for a message in flight
		}
		if seen.Value != fresh.Value {
			t.Fatalf("%s: the reader still serves %s 2s after the writer stored %s: the change announcement did not reach it",
				app, wechat.Fingerprint(seen.Value), wechat.Fingerprint(fresh.Value))
		}
		t.Logf("%s: reader saw the new token %v after the writer's Invalidate began", app, time.Since(start).Round(time.Millisecond))
	}
	if n := f.Fake.Stats("").Minted; n != 2*len(apps) {
		t.Errorf("minted %d tokens, want %d (one cold start and one invalidation per app)", n, 2*len(apps))
	}
}

// Callers waiting for another process's fetch are woken by its
// announcement, published on whichever master holds the app: with a
// one-minute lock and callers that give up after 5 s, a wake-up that does
// not cross the cluster is a caller error.
func testClusterWaiters(t *testing.T, cl *redistest.Cluster, apps []string) {
	const prefix = "clwait:"
	f := newClusterFleet(t, cl, apps, 6, nil,
		tokencache.WithKeyPrefix(prefix), tokencache.WithLockTTL(time.Minute), tokencache.WithFetchTimeout(30*time.Second))
	admin := cl.Client()
	ctx := context.Background()
	const rounds = 3
	for round := 0; round < rounds; round++ {
		current := map[string]string{}
		for _, app := range apps {
			cur, err := f.Caches[0].Token(ctx, app)
			if err != nil {
				t.Fatal(err)
			}
			current[app] = cur.Value
			admin.Del(ctx, prefix+"{"+app+"}:token")
		}
		got := f.Herd(20, 5*time.Second, func(ctx context.Context, c *tokencache.Cache, app string) (tokencache.Token, error) {
			tok, err := c.Invalidate(ctx, app, current[app])
			if err != nil {
				err = fmt.Errorf("%s: %w", app, err)
			}
			return tok, err
		})
		if n := f.TokenErrs.Load(); n != 0 {
			t.Fatalf("round %d: %d of 360 callers failed, e.g. %v", round, n, f.ErrSamples())
		}
		got.Check(t, fmt.Sprintf("round %d", round), apps)
	}
	for _, app := range apps {
		if n := f.Fake.Stats(app).Minted; n != 1+rounds {
			t.Errorf("%s: upstream fetches = %d, want %d (1 + one per round)", app, n, 1+rounds)
		}
	}
}

// A lock holder whose reply came back freezes past its lock's expiry;
// another process fetches and stores; the frozen one's write is refused by
// the compare-and-set script on the app's master, and the token it may have
// invalidated is capped there and announced. On every master at once.
func testClusterStalledWriter(t *testing.T, cl *redistest.Cluster, apps []string) {
	const prefix = "clstall:"
	f := newClusterFleet(t, cl, apps, 2,
		[]wechattest.Option{wechattest.WithLifetime(lifetime), wechattest.WithGrace(grace)},
		append(cacheOptions(), tokencache.WithKeyPrefix(prefix))...)
	frozen, other := f.Caches[0], f.Caches[1]
	stalled := map[string]chan struct{}{}
	release := make(chan struct{})
	thaw := sync.OnceFunc(func() { close(release) })
	t.Cleanup(thaw) // before the caches' Close, which waits for the frozen fetches
	for _, app := range apps {
		stalled[app] = make(chan struct{})
	}
	f.src.after = func(app string, n int64) {
		if n == 1 {
			close(stalled[app])
			<-release
		}
	}
	type result struct {
		app string
		tok tokencache.Token
		err error
	}
	results := make(chan result, len(apps))
	for _, app := range apps {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			tok, err := frozen.Token(ctx, app)
			results <- result{app, tok, err}
		}()
	}
	ctx := context.Background()
	admin := cl.Client()
	for _, app := range apps {
		select {
		case <-stalled[app]:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: the first fetch never reached the stall", app)
		}
	}
	// The fault: the holder stays frozen until every lock has expired.
	for _, app := range apps {
		deadline := time.Now().Add(3 * time.Second)
		for admin.Exists(ctx, prefix+"{"+app+"}:lock").Val() != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the frozen holder's lock did not expire within 3s", app)
			}
			time.Sleep(20 * time.Millisecond) // waiting for Redis to expire the lock
		}
	}
	taken := map[string]tokencache.Token{}
	for _, app := range apps {
		tok, err := other.Token(ctx, app)
		if err != nil {
			t.Fatalf("%s: the other process, with the lock expired: %v", app, err)
		}
		taken[app] = tok
	}
	thaw()
	final := map[string]tokencache.Token{}
	for range apps {
		r := <-results
		if r.err != nil {
			t.Fatalf("%s: the frozen process after thawing: %v", r.app, r.err)
		}
		final[r.app] = r.tok
	}
	if n := frozen.Admin().Stats().Refused; n != int64(len(apps)) {
		t.Errorf("the frozen process had %d writes refused, want %d (one per app)", n, len(apps))
	}
	for _, app := range apps {
		st := f.Fake.Stats(app)
		rec, found, err := other.Admin().Peek(ctx, app)
		if err != nil || !found {
			t.Fatalf("%s: peek: %v %v", app, found, err)
		}
		// Exactly the frozen holder's token was never stored.
		if int64(st.Minted) != rec.Version+1 {
			t.Errorf("%s: minted %d, stored %d versions: want exactly one unstored (the frozen holder's)", app, st.Minted, rec.Version)
		}
		if rec.Value != final[app].Value {
			t.Errorf("%s: the thawed process returned %s, Redis holds %s", app, wechat.Fingerprint(final[app].Value), wechat.Fingerprint(rec.Value))
		}
		// The other process hears of the replacement (or the cap) at once,
		// though its near copy is younger than the near max age.
		var seen tokencache.Token
		for polls := 0; polls < 200 && seen.Value != rec.Value; polls++ {
			if seen, err = other.Token(ctx, app); err != nil {
				t.Fatalf("%s: %v", app, err)
			}
			if seen.Value != rec.Value {
				time.Sleep(5 * time.Millisecond) // polling the other process's memory for a message in flight
			}
		}
		if seen.Value != rec.Value {
			t.Errorf("%s: the other process still serves %s, Redis holds %s", app, wechat.Fingerprint(seen.Value), wechat.Fingerprint(rec.Value))
		}
		for _, tok := range []string{taken[app].Value, final[app].Value} {
			if code := f.Business(ctx, tok); code != 0 {
				t.Errorf("%s: business call with %s: errcode %d", app, wechat.Fingerprint(tok), code)
			}
		}
	}
	f.AssertNoDeadToken()
}

// A master dies (no replica): its app's token keeps being served from
// memory until its usable end and then a clear error, with no upstream
// fetch; a Redis Cluster error (a refused dial to the dead node,
// CLUSTERDOWN from the others) is never taken for a miss. The apps on the other masters
// keep answering from Redis until the cluster declares itself down.
func testClusterMasterDown(t *testing.T, cl *redistest.Cluster, apps []string) {
	f := newClusterFleet(t, cl, apps, 0,
		[]wechattest.Option{wechattest.WithLifetime(lifetime), wechattest.WithGrace(grace)})
	for i := 0; i < 2; i++ {
		// One dial attempt per node: go-redis's default of five, 100 ms
		// apart, per redirect, holds each call to a dead node for ~1.7 s.
		rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs(), DialerRetries: 1, DialTimeout: 200 * time.Millisecond})
		t.Cleanup(func() { _ = rdb.Close() })
		c, err := tokencache.New(rdb, f.src, append(cacheOptions(), tokencache.WithKeyPrefix("cldown:"))...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		f.Caches = append(f.Caches, c)
	}
	ctx := context.Background()
	before := map[string]tokencache.Token{}
	for _, c := range f.Caches {
		for _, app := range apps {
			tok, err := c.Token(ctx, app)
			if err != nil {
				t.Fatal(err)
			}
			before[app] = tok
		}
	}
	dead := apps[0] // on master 0
	readsBefore := f.Caches[1].Admin().Stats().Revalidations
	cl.StopNode(0)

	// Until the tokens are due (no refresh may blur the count), every call
	// answers, and the dead master's app is served from memory.
	var slowest time.Duration
	for time.Now().Before(before[dead].RefreshAt.Add(-100 * time.Millisecond)) {
		for _, c := range f.Caches {
			for _, app := range apps {
				start := time.Now()
				cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				tok, err := c.Token(cctx, app)
				cancel()
				slowest = max(slowest, time.Since(start))
				if err != nil || tok.Value != before[app].Value {
					t.Fatalf("%s with master 0 down: %s, %v; want the token from before", app, wechat.Fingerprint(tok.Value), err)
				}
			}
		}
		time.Sleep(50 * time.Millisecond) // the pace of a reader
	}
	stale := f.Caches[0].Admin().Stats().RevalidationErrors + f.Caches[1].Admin().Stats().RevalidationErrors
	if stale == 0 {
		t.Errorf("%s was never served from memory while its master was down: the test proved nothing", dead)
	}
	if f.Caches[1].Admin().Stats().Revalidations == readsBefore {
		t.Errorf("no Redis read after master 0 stopped: the live masters' apps were not read")
	}
	t.Logf("with master 0 down: %d background reads failed while copies served; slowest Token %v", stale, slowest.Round(time.Millisecond))

	// Past its usable end the dead master's app gets ErrUnavailable.
	for time.Now().Before(before[dead].UsableUntil.Add(50 * time.Millisecond)) {
		time.Sleep(20 * time.Millisecond) // the token's life running out
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if tok, err := f.Caches[0].Token(cctx, dead); !errors.Is(err, tokencache.ErrUnavailable) {
		t.Errorf("%s past its usable end with its master down: %s, %v; want ErrUnavailable", dead, wechat.Fingerprint(tok.Value), err)
	}
	if n := f.Fake.Stats(dead).Minted; n != 1 {
		t.Errorf("%s: %d upstream fetches, want 1 (none while its master was down)", dead, n)
	}

	// Once the live masters agree master 0 failed, they answer CLUSTERDOWN:
	// not a miss either, not even for a caller reporting its token bad.
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(cl.NodeClient(1).ClusterInfo(ctx).Val(), "cluster_state:fail") {
		if time.Now().After(deadline) {
			t.Fatal("the live masters did not declare the cluster down within 5s")
		}
		time.Sleep(50 * time.Millisecond) // polling gossip: no signal to await
	}
	for _, app := range apps[1:] {
		minted := f.Fake.Stats(app).Minted
		c := f.Caches[0]
		tok, err := c.Token(cctx, app)
		if err == nil {
			// A refreshed token still in memory: reporting it bad asks
			// WeChat, which still accepts it, so it is kept; nothing may
			// be fetched either way.
			var again tokencache.Token
			if again, err = c.Invalidate(cctx, app, tok.Value); err == nil && again.Value == tok.Value {
				continue
			}
		}
		if !errors.Is(err, tokencache.ErrUnavailable) || !strings.Contains(err.Error(), "CLUSTERDOWN") {
			t.Errorf("%s with the cluster down: %s, %v; want ErrUnavailable naming CLUSTERDOWN", app, wechat.Fingerprint(tok.Value), err)
		}
		if n := f.Fake.Stats(app).Minted; n != minted {
			t.Errorf("%s: %d upstream fetches while the cluster was down", app, n-minted)
		}
	}
}
