package lock

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/internal/redistest"
)

// Both kinds of lock on a real 3-master Redis Cluster, each process with its
// own cluster client. One cluster serves every subtest: each start costs
// Redis's 2 s writable delay.
func TestOnRedisCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	t.Run("mutex", func(t *testing.T) { testClusterMutex(t, cl) })
	t.Run("elector", func(t *testing.T) { testClusterElector(t, cl) })
}

// lockNamesOnEveryNode returns one lock name per master, in node order.
func lockNamesOnEveryNode(t *testing.T, cl *redistest.Cluster, c *redis.ClusterClient) []string {
	t.Helper()
	names := make([]string, len(cl.Addrs()))
	found := 0
	for i := 0; i < 1000 && found < len(names); i++ {
		name := fmt.Sprintf("tokenkeeper:{app%d}:lock", i)
		slot, err := c.ClusterKeySlot(context.Background(), name).Result()
		if err != nil {
			t.Fatalf("CLUSTER KEYSLOT %s: %v", name, err)
		}
		if n := cl.NodeOfSlot(int(slot)); names[n] == "" {
			names[n] = name
			found++
		}
	}
	if found < len(names) {
		t.Fatalf("no lock name for every node among 1000: %q", names)
	}
	return names
}

func testClusterMutex(t *testing.T, cl *redistest.Cluster) {
	ctx := context.Background()
	a, b := NewRedisLocker(cl.Client()), NewRedisLocker(cl.Client())
	names := lockNamesOnEveryNode(t, cl, cl.Client())
	const ttl = 10 * time.Second
	for node, name := range names {
		held, err := a.TryLock(ctx, name, ttl)
		if err != nil {
			t.Fatalf("%s (node %d): first TryLock: %v", name, node, err)
		}
		if other, err := b.TryLock(ctx, name, ttl); !errors.Is(err, ErrNotAcquired) || other != nil {
			t.Fatalf("%s (node %d): second process's TryLock = %v, %v; want nil, ErrNotAcquired", name, node, other, err)
		}
		// The lock is a key on the master that owns its slot, with the ttl.
		pttl, err := cl.NodeClient(node).PTTL(ctx, name).Result()
		if err != nil || pttl <= ttl-time.Second || pttl > ttl {
			t.Fatalf("%s on node %d: PTTL = %v, %v; want just under %v", name, node, pttl, err, ttl)
		}
		if err := held.Unlock(ctx); err != nil {
			t.Fatalf("%s (node %d): Unlock: %v", name, node, err)
		}
		if n, err := cl.NodeClient(node).Exists(ctx, name).Result(); err != nil || n != 0 {
			t.Fatalf("%s on node %d after Unlock: EXISTS = %d, %v; want 0", name, node, n, err)
		}
		if _, err := b.TryLock(ctx, name, ttl); err != nil {
			t.Fatalf("%s (node %d): TryLock after Unlock: %v", name, node, err)
		}
	}

	// An expired holder's Unlock spares the new holder (redsync's
	// compare-and-delete script, run on the owning master).
	name, node := names[0], 0
	name = name[:len(name)-len("lock")] + "short"
	if slot := cl.Client().ClusterKeySlot(ctx, name).Val(); cl.NodeOfSlot(int(slot)) != node {
		t.Fatalf("%s left node %d: the hash tag does not keep it with its lock", name, node)
	}
	const short = 300 * time.Millisecond
	stale, err := a.TryLock(ctx, name, short)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for cl.NodeClient(node).Exists(ctx, name).Val() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not expire within 3s of a %v ttl", name, short)
		}
		time.Sleep(20 * time.Millisecond) // waiting for Redis to expire the key
	}
	if _, err := b.TryLock(ctx, name, ttl); err != nil {
		t.Fatalf("new holder after expiry: %v", err)
	}
	newValue := cl.NodeClient(node).Get(ctx, name).Val()
	if err := stale.Unlock(ctx); err != nil {
		t.Fatalf("Unlock of an expired lock now held by another: %v, want nil", err)
	}
	if v, err := cl.NodeClient(node).Get(ctx, name).Result(); err != nil || v != newValue {
		t.Fatalf("the stale Unlock removed the new holder's lock: value %q (err %v), want %q", v, err, newValue)
	}
}

func testClusterElector(t *testing.T, cl *redistest.Cluster) {
	// Renewals must work for the lead to last past the lease; a takeover
	// well under lease-retry (1.4 s) can only come from a release.
	tm := timings{lease: 1500 * time.Millisecond, renew: time.Second, retry: 100 * time.Millisecond}
	g := newGroup(t)
	var cs []*candidate
	for i := range 3 {
		c := g.add(t, cl.Client(), fmt.Sprintf("host-%d", i), tm)
		cs = append(cs, c)
		c.run(t)
	}
	leader, _ := firstStarted(t, 5*time.Second, cs...)
	ctx := context.Background()
	for _, c := range cs {
		if c == leader {
			continue
		}
		if got := await(t, c.leaders, 5*time.Second, c.id+" to observe the leader"); got != leader.id {
			t.Errorf("%s observed leader %q, want %q", c.id, got, leader.id)
		}
		if id, err := c.Leader(ctx); err != nil || id != leader.id {
			t.Errorf("%s.Leader() = %q, %v; want %q", c.id, id, err, leader.id)
		}
	}
	// For more than a lease nobody else leads: the leader's extensions
	// reach the master holding the lease.
	quiet := time.After(tm.lease * 4 / 3)
	for waiting := true; waiting; {
		select {
		case <-quiet:
			waiting = false
		case <-cs[0].started:
			t.Fatalf("%s started leading while %s renewed", cs[0].id, leader.id)
		case <-cs[1].started:
			t.Fatalf("%s started leading while %s renewed", cs[1].id, leader.id)
		case <-cs[2].started:
			t.Fatalf("%s started leading while %s renewed", cs[2].id, leader.id)
		}
	}
	if !leader.IsLeader() || leader.Transitions() != 1 {
		t.Fatalf("%s: IsLeader %v, Transitions %d after the quiet period; want true, 1", leader.id, leader.IsLeader(), leader.Transitions())
	}

	// Handover on cancel, twice: each time one of the rest takes over at
	// once, because the leaving leader released the lease.
	rest := cs
	for round := 1; round <= 2; round++ {
		var next []*candidate
		for _, c := range rest {
			if c != leader {
				next = append(next, c)
			}
		}
		start := time.Now()
		if err := leader.stop(t); err != nil {
			t.Fatalf("round %d: %s Run returned %v, want nil", round, leader.id, err)
		}
		newLeader, _ := firstStarted(t, time.Second, next...)
		t.Logf("round %d: %s took over from %s in %v", round, newLeader.id, leader.id, time.Since(start).Round(time.Millisecond))
		if leader.IsLeader() {
			t.Errorf("round %d: %s still reports IsLeader after Run returned", round, leader.id)
		}
		if id, err := newLeader.Leader(ctx); err != nil || id != newLeader.id {
			t.Errorf("round %d: Leader() = %q, %v; want %q", round, id, err, newLeader.id)
		}
		leader, rest = newLeader, next
	}
}
