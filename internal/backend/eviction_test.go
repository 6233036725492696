package backend_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/internal/backend"
	"github.com/tokenkeeper/tokenkeeper/internal/redistest"
)

// TestEvictionCheck reads maxmemory-policy from real servers: noeviction
// is safe; allkeys-lru is named with its server, on a standalone server,
// on a Cluster master, in a replica's log and in its /readyz body; a
// least-privilege ACL user cannot read it, and the warning says so.
func TestEvictionCheck(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	safe := redistest.Start(t)
	if ev := backend.CheckEviction(ctx, safe.Client()); !ev.Safe() || ev.Warning() != "" || ev.Policies[safe.Addr()] != "noeviction" {
		t.Errorf("default redis-server: %+v %q, want safe noeviction", ev, ev.Warning())
	}

	lru := redistest.Start(t, redistest.WithArgs("--maxmemory-policy", "allkeys-lru"))
	ev := backend.CheckEviction(ctx, lru.Client())
	if ev.Safe() || !strings.Contains(ev.Warning(), lru.Addr()+" has allkeys-lru") || !strings.Contains(ev.Warning(), "budget silently starts again from zero") {
		t.Errorf("allkeys-lru: %+v %q", ev, ev.Warning())
	}

	cl := redistest.StartCluster(t, 2)
	if err := cl.NodeClient(1).ConfigSet(ctx, "maxmemory-policy", "volatile-ttl").Err(); err != nil {
		t.Fatal(err)
	}
	ev = backend.CheckEviction(ctx, cl.Client())
	if ev.Safe() || len(ev.Policies) != 2 || !strings.Contains(ev.Warning(), cl.Addrs()[1]+" has volatile-ttl") || strings.Contains(ev.Warning(), cl.Addrs()[0]) {
		t.Errorf("cluster with one evicting master: %+v %q", ev, ev.Warning())
	}

	fake := newUpstream(t)
	r := startReplica(t, deployedConfig(t, fmt.Sprintf("addrs: [%q]", lru.Addr()), fake.url))
	r.awaitLeading(t, 10*time.Second)
	for {
		code, body := r.do(t, http.MethodGet, "/readyz", "")
		if code == http.StatusOK && strings.Contains(body, "warning: redis maxmemory-policy is not noeviction ("+lru.Addr()+" has allkeys-lru)") {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("/readyz: %d %q, want ok with the eviction warning", code, body)
		}
		time.Sleep(20 * time.Millisecond) // the check runs once at start, beside the election
	}
	if !strings.Contains(r.logs.String(), "level=WARN msg=\"refresher: redis maxmemory-policy is not noeviction") {
		t.Errorf("no WARN about the policy in the log:\n%s", r.logs)
	}

	admin := safe.Client()
	cfg := deployedConfig(t, fmt.Sprintf(`addrs: [%q], username: tokenkeeper, password: %q`, safe.Addr(), aclPassword), fake.url)
	if err := admin.Do(ctx, toAny(backend.ACLSetUser(cfg, "tokenkeeper", aclPassword))...).Err(); err != nil {
		t.Fatal(err)
	}
	user := redis.NewClient(&redis.Options{Addr: safe.Addr(), Username: "tokenkeeper", Password: aclPassword})
	defer user.Close()
	ev = backend.CheckEviction(ctx, user)
	if ev.Safe() || ev.Err == nil || !strings.Contains(ev.Warning(), "CONFIG GET is not allowed to this Redis user") {
		t.Errorf("ACL user: %+v %q", ev, ev.Warning())
	}
}

// TestFlushResetsTheBudget shows why noeviction matters: the daily fetch
// count is an ordinary Redis key, so a FLUSHALL (or an eviction) sets it
// back to zero and the fleet may spend the day's quota again.
func TestFlushResetsTheBudget(t *testing.T) {
	srv := redistest.Start(t)
	fake := newUpstream(t)
	cache, client, err := backend.Open(deployedConfig(t, fmt.Sprintf("addrs: [%q]", srv.Addr()), fake.url))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	defer cache.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cache.Token(ctx, "wx1"); err != nil {
		t.Fatal(err)
	}
	if n, err := cache.Admin().FetchesToday(ctx, "wx1"); err != nil || n != 1 {
		t.Fatalf("fetches today %d, %v: want 1", n, err)
	}
	if err := srv.Client().FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := cache.Admin().FetchesToday(ctx, "wx1"); err != nil || n != 0 {
		t.Fatalf("after FLUSHALL: fetches today %d, %v: want 0 (the budget forgot)", n, err)
	}
}
