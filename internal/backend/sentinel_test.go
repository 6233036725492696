package backend_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/backend"
	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/internal/redistest"
	"github.com/tokenkeeper/tokenkeeper/pkg/lock"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechattest"
)

// Short token lives, so that tokens rotate several times within a test:
// a 4 s token, kept 2 s after its replacement, refreshed 1 s before the
// end of its usable life (300 ms before its expiry).
const (
	rotatingLifetime = 4 * time.Second
	rotatingGrace    = 2 * time.Second
	rotatingCache    = "lock_ttl: 1500ms, fetch_timeout: 1s, overlap: 2s, margin: 300ms, near_max_age: 300ms, refresh_ahead: 1s"
)

// readers are processes reading wx1's token in a loop, each with its own
// cache and Redis client (backend.Open), every token checked against the
// fake the moment it is handed out: one the fake would refuse is dead.
type readers struct {
	ok, errs, dead atomic.Int64
	mu             sync.Mutex
	samples        []string // the first dead tokens and errors, for the failure message
	stop           func()
}

// startReaders starts n readers, each reading every 10 ms, at most
// maxReads times and until stop.
func startReaders(t *testing.T, cfg *config.Config, fake *upstream, n, maxReads int) *readers {
	t.Helper()
	r := &readers{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range n {
		cache, client, err := backend.Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer client.Close()
			defer cache.Close()
			tick := time.NewTicker(10 * time.Millisecond) // pacing, not synchronization
			defer tick.Stop()
			for i := 0; i < maxReads && ctx.Err() == nil; i++ {
				rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
				tok, err := cache.Token(rctx, "wx1")
				rcancel()
				switch {
				case ctx.Err() != nil:
					return
				case err != nil:
					r.errs.Add(1)
					r.sample("error: " + err.Error())
				default:
					if st := fake.TokenState("wx1", tok.Value); st != wechattest.Live {
						r.dead.Add(1)
						r.sample(fmt.Sprintf("dead token (%v), version %d", st, tok.Version))
					} else {
						r.ok.Add(1)
					}
				}
				select {
				case <-tick.C:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	var once sync.Once
	r.stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(r.stop)
	return r
}

func (r *readers) sample(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.samples) < 5 {
		r.samples = append(r.samples, s)
	}
}

func (r *readers) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fmt.Sprintf("%d good reads, %d errors, %d dead tokens; samples %q", r.ok.Load(), r.errs.Load(), r.dead.Load(), r.samples)
}

// awaitMinted waits until the fake has minted more than n tokens for wx1.
func awaitMinted(t *testing.T, fake *upstream, n int, within time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(within)
	for fake.Stats("wx1").Minted <= n {
		if time.Now().After(deadline) {
			t.Fatalf("no token minted beyond %d within %v", n, within)
		}
		time.Sleep(10 * time.Millisecond) // polling the fake's counters: no signal to await
	}
	return time.Now()
}

// TestSentinelFailover runs, as the least-privilege ACL user, two replicas (one leads and refreshes the
// rotating token) and three reader processes against a master, a replica
// and three sentinels; kills the master (SIGKILL) while they run; and
// checks that the sentinels promote the replica, that a lock can be taken
// and a token is refreshed on the new master, that both replicas are
// ready again, and that no reader was handed a dead token. The figures
// (time to promotion, to the first refresh, reads and errors) are logged.
func TestSentinelFailover(t *testing.T) {
	g := redistest.StartSentinel(t)
	fake := newUpstream(t, wechattest.WithLifetime(rotatingLifetime), wechattest.WithGrace(rotatingGrace))
	newCfg := func(identity string) *config.Config {
		cfg := deployedConfigWith(t, fmt.Sprintf("addrs: [%s], master_name: %s, username: tokenkeeper, password: %q", strings.Join(g.SentinelAddrs(), ", "), redistest.SentinelMasterName, aclPassword), rotatingCache, fake.url)
		cfg.Identity = identity
		return cfg
	}
	// As deployed: the least-privilege user, on both servers (ACLs are
	// not replicated).
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, s := range []*redistest.Server{g.Master, g.Replica} {
		if err := s.Client().Do(ctx, toAny(backend.ACLSetUser(newCfg("x"), "tokenkeeper", aclPassword))...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	a := startReplica(t, newCfg("sentinel-a"))
	a.awaitLeading(t, 10*time.Second)
	b := startReplica(t, newCfg("sentinel-b"))
	rd := startReaders(t, newCfg("reader"), fake, 3, 3000)

	// Two rotations before the failover: the fleet is in its stride.
	before := fake.Stats("wx1").Minted
	awaitMinted(t, fake, before+1, 10*time.Second)

	mintedAtKill := fake.Stats("wx1").Minted
	killed := time.Now()
	g.Master.Stop()
	if err := g.AwaitMaster(g.Replica.Addr(), 20*time.Second); err != nil {
		t.Fatal(err)
	}
	promoted := time.Since(killed)

	// The lock works on the new master (through the sentinels).
	client := backend.NewClient(newCfg("probe"))
	defer client.Close()
	var locked time.Duration
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		l, err := lock.NewRedisLocker(client).TryLock(ctx, "tokenkeeper:failover-probe", time.Second)
		cancel()
		if err == nil {
			locked = time.Since(killed)
			_ = l.Unlock(context.Background())
			break
		}
		if time.Since(killed) > 20*time.Second {
			t.Fatalf("no lock on the new master within 20s of the kill: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // polling for recovery: no signal to await
	}
	refreshed := awaitMinted(t, fake, mintedAtKill, 20*time.Second).Sub(killed)
	// One more rotation after the recovery, with the readers still on.
	awaitMinted(t, fake, fake.Stats("wx1").Minted, 10*time.Second)
	rd.stop()

	for _, r := range []*replica{a, b} {
		if code, body := r.do(t, http.MethodGet, "/readyz", ""); code != http.StatusOK {
			t.Errorf("%s/readyz after the failover: %d %s", r.base, code, body)
		}
	}
	// Tokens rotate every few seconds: the one served must be live (it
	// may be the previous one, in its overlap).
	code, body := b.do(t, http.MethodGet, "/v1/apps/wx1/token", "")
	var got struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal([]byte(body), &got); code != http.StatusOK || err != nil || fake.TokenState("wx1", got.AccessToken) != wechattest.Live {
		t.Errorf("token after the failover: %d %s (%v)", code, body, fake.TokenState("wx1", got.AccessToken))
	}
	entries, err := g.Replica.Client().Do(ctx, "ACL", "LOG").Slice()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if m, ok := e.(map[any]any); !ok || m["object"] != "config|get" {
			t.Errorf("the new master's ACL refused something (ACL LOG): %v", e)
		}
	}
	t.Logf("sentinel failover: master killed; replica promoted after %v; lock taken after %v; first refresh after %v; readers: %v; tokens minted %d",
		promoted.Round(time.Millisecond), locked.Round(time.Millisecond), refreshed.Round(time.Millisecond), rd, fake.Stats("wx1").Minted)
	if rd.dead.Load() != 0 {
		t.Errorf("readers were handed dead tokens: %v", rd)
	}
	if rd.ok.Load() == 0 {
		t.Errorf("no good read: %v", rd)
	}
}
