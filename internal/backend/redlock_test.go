package backend_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/internal/backend"
	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/internal/redistest"
	"github.com/tokenkeeper/tokenkeeper/pkg/lock"
)

// TestRedlockSurvivesOneMasterOfThree puts the fetch locks and the lease
// on three independent masters (redis.lock_addrs; the tokens on a fourth
// server) and checks: everything works; the lease is on the three lock
// masters and not on the data Redis; with one master killed the leader
// keeps renewing and a fetch still takes its lock; with two killed the
// leader steps down, nobody can lead or lock (each refusal says how many
// masters answered), and tokens are still served.
func TestRedlockSurvivesOneMasterOfThree(t *testing.T) {
	data := redistest.Start(t)
	masters := []*redistest.Server{redistest.Start(t), redistest.Start(t), redistest.Start(t)}
	fake := newUpstream(t)
	newCfg := func(identity string) *config.Config {
		cfg := deployedConfig(t, fmt.Sprintf("addrs: [%q], lock_addrs: [%q, %q, %q]", data.Addr(), masters[0].Addr(), masters[1].Addr(), masters[2].Addr()), fake.url)
		cfg.Identity = identity
		return cfg
	}
	exercise(t, newCfg("redlock-x"), fake)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := startReplica(t, newCfg("redlock-a"))
	a.awaitLeading(t, 10*time.Second)
	b := startReplica(t, newCfg("redlock-b"))
	probeCfg := newCfg("probe")
	_, client, err := backend.Open(probeCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	probe, err := lock.NewElector(backend.LocksOf(client).Elector(probeCfg.ElectorConfig(client, lock.LeaderCallbacks{}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range masters {
		if v, err := m.Client().Get(ctx, probeCfg.Lease.Name).Result(); err != nil || !strings.HasPrefix(v, "redlock-a/") {
			t.Fatalf("lock master %d: lease %q, %v: want redlock-a's", i, v, err)
		}
	}
	if n, err := data.Client().Exists(ctx, probeCfg.Lease.Name).Result(); err != nil || n != 0 {
		t.Fatalf("the lease is on the data Redis (%d, %v)", n, err)
	}

	// One of three down: the leader keeps renewing on the other two.
	masters[0].Stop()
	survivor := masters[1].Client()
	ttl0, err := survivor.PTTL(ctx, probeCfg.Lease.Name).Result()
	if err != nil {
		t.Fatal(err)
	}
	for {
		ttl, err := survivor.PTTL(ctx, probeCfg.Lease.Name).Result()
		if err != nil {
			t.Fatal(err)
		}
		if ttl > ttl0 {
			break // a renewal after the kill
		}
		if ttl < 0 || ctx.Err() != nil {
			t.Fatalf("the lease was not renewed with one master down (pttl %v); log:\n%s", ttl, a.logs)
		}
		time.Sleep(20 * time.Millisecond) // polling the lease's TTL: no signal to await
	}
	if leader, err := probe.Leader(ctx); err != nil || leader != "redlock-a" {
		t.Fatalf("leader with one master down: %q, %v", leader, err)
	}
	if a.logged(msgStoppedLeading) {
		t.Fatalf("the leader stepped down with one master of three down:\n%s", a.logs)
	}
	// A fetch takes its lock on the two: a passive refresh through b.
	old := fake.CurrentToken("wx1")
	fake.Revoke("wx1", old)
	if code, body := b.do(t, http.MethodPost, "/v1/apps/wx1/invalidate", `{"access_token":"`+old+`"}`); code != http.StatusOK || !strings.Contains(body, fake.CurrentToken("wx1")) || fake.CurrentToken("wx1") == old {
		t.Fatalf("passive refresh with one master down: %d %s", code, body)
	}

	// Two of three down: no majority.
	masters[1].Stop()
	secondKill := time.Now()
	a.await(t, msgStoppedLeading, 5*time.Second)
	t.Logf("redlock: with two of three masters killed the leader stepped down after %v (renew deadline %v)", time.Since(secondKill).Round(time.Millisecond), probeCfg.Lease.RenewDeadline)
	_, err = probe.Leader(ctx)
	if err == nil || !strings.Contains(err.Error(), "1 of 3 Redis masters answered, 2 needed") {
		t.Fatalf("Leader with two masters down: %v, want it to say 1 of 3 answered", err)
	}
	if code, body := b.do(t, http.MethodGet, "/readyz", ""); code != http.StatusServiceUnavailable || !strings.Contains(body, "1 of 3 Redis masters answered") {
		t.Fatalf("/readyz with two masters down: %d %s", code, body)
	}
	lc := lockClients(t, probeCfg)
	_, err = lock.NewRedisLocker(lc[0], lc[1:]...).TryLock(ctx, "tokenkeeper:{wx1}:lock", time.Second)
	if err == nil || errors.Is(err, lock.ErrNotAcquired) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("TryLock with two masters down: %v, want a Redis error naming the refused connections", err)
	}
	// The tokens are on the data Redis: still served.
	if code, body := b.do(t, http.MethodGet, "/v1/apps/wx1/token", ""); code != http.StatusOK || !strings.Contains(body, fake.CurrentToken("wx1")) {
		t.Fatalf("token with two lock masters down: %d %s", code, body)
	}
}

// lockClients are plain clients of cfg's lock masters, closed at cleanup.
func lockClients(t *testing.T, cfg *config.Config) []redis.UniversalClient {
	var cs []redis.UniversalClient
	for _, o := range cfg.LockOptions() {
		c := redis.NewClient(o)
		t.Cleanup(func() { c.Close() })
		cs = append(cs, c)
	}
	return cs
}
