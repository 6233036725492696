package redistest

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// One cluster for every check: each start costs Redis's 2 s writable delay.
func TestCluster(t *testing.T) {
	var addrs []string
	t.Run("cluster", func(t *testing.T) {
		start := time.Now()
		cl := StartCluster(t, 3)
		took := time.Since(start)
		addrs = cl.Addrs()
		checkSlots(t, cl, took)
		checkPublish(t, cl)
		checkStopNode(t, cl)
	})
	if len(addrs) != 3 {
		t.Fatalf("Addrs = %v, want 3", addrs)
	}
	for _, a := range addrs {
		if conn, err := net.DialTimeout("tcp", a, time.Second); err == nil {
			_ = conn.Close()
			t.Errorf("node %s still accepts connections after its test's cleanup", a)
		}
	}
}

// checkSlots: every master serves its range, and only its range.
func checkSlots(t *testing.T, cl *Cluster, took time.Duration) {
	t.Logf("3-master cluster ready in %v", took.Round(time.Millisecond))
	// Redis's own 2 s writable delay is the floor (~2.05 s when idle). A
	// loaded machine adds some; far more means the nodes were slow to agree
	// (e.g. colliding config epochs).
	if took > 6*time.Second {
		t.Errorf("StartCluster took %v, want about 2s", took)
	}
	addrs := cl.Addrs()
	if len(addrs) != 3 {
		t.Fatalf("Addrs = %v, want 3", addrs)
	}
	for _, a := range addrs {
		if !strings.HasPrefix(a, "127.0.0.1:") || strings.HasSuffix(a, ":6379") {
			t.Fatalf("node address %q: want 127.0.0.1 and never port 6379", a)
		}
	}
	ctx := context.Background()
	c := cl.Client()

	// Keys spread over every master; each lands exactly on the node whose
	// range holds its slot, and no other node has it.
	perNode := make([]int, 3)
	for i := 0; i < 30; i++ {
		key := fmt.Sprintf("k%d", i)
		if err := c.Set(ctx, key, "v", 0).Err(); err != nil {
			t.Fatalf("SET %s through the cluster client: %v", key, err)
		}
		slot, err := c.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		owner := cl.NodeOfSlot(int(slot))
		perNode[owner]++
		for n := range 3 {
			got, err := cl.NodeClient(n).Get(ctx, key).Result()
			if n == owner && (err != nil || got != "v") {
				t.Errorf("node %d owns slot %d of %s but GET says %q, %v", n, slot, key, got, err)
			}
			if n != owner && (err == nil || !strings.HasPrefix(err.Error(), "MOVED")) {
				t.Errorf("node %d does not own slot %d of %s but GET says %q, %v; want MOVED", n, slot, key, got, err)
			}
		}
	}
	for n, k := range perNode {
		if k == 0 {
			t.Errorf("node %d got none of 30 keys: slots are not spread (%v)", n, perNode)
		}
	}

	// It is a real cluster: a script over two slots is refused, one over a
	// shared hash tag runs.
	script := redis.NewScript(`redis.call('SET', KEYS[1], ARGV[1]); redis.call('SET', KEYS[2], ARGV[1]); return 1`)
	if err := script.Run(ctx, c, []string{"a", "b"}, "x").Err(); err == nil || !strings.Contains(err.Error(), "CROSSSLOT") {
		t.Errorf("script over keys in two slots: %v, want a CROSSSLOT error", err)
	}
	if err := script.Run(ctx, c, []string{"{app}:a", "{app}:b"}, "x").Err(); err != nil {
		t.Errorf("script over one hash tag: %v", err)
	}
}

// checkPublish: a message published on any node reaches subscribers on
// every node (the cache's change announcements rely on it).
func checkPublish(t *testing.T, cl *Cluster) {
	ctx := context.Background()
	// Each subscriber sits on one node; every node publishes once.
	var subs []*redis.PubSub
	for n := range 3 {
		ps := cl.NodeClient(n).Subscribe(ctx, "events")
		t.Cleanup(func() { _ = ps.Close() })
		if _, err := ps.Receive(ctx); err != nil {
			t.Fatalf("node %d: subscribe: %v", n, err)
		}
		subs = append(subs, ps)
	}
	for from := range 3 {
		msg := fmt.Sprintf("from-%d", from)
		if err := cl.NodeClient(from).Publish(ctx, "events", msg).Err(); err != nil {
			t.Fatal(err)
		}
		for n, ps := range subs {
			select {
			case m := <-ps.Channel():
				if m.Payload != msg {
					t.Errorf("subscriber on node %d got %q, want %q", n, m.Payload, msg)
				}
			case <-time.After(2 * time.Second):
				t.Fatalf("subscriber on node %d did not get %q published on node %d within 2s", n, msg, from)
			}
		}
	}
}

// checkStopNode: a stopped master's slots fail at once, the others' still
// answer (until the cluster agrees the node failed).
func checkStopNode(t *testing.T, cl *Cluster) {
	ctx := context.Background()
	c := cl.Client()
	keyOn := make([]string, 3)
	for i := 0; i < 100; i++ {
		key := fmt.Sprintf("s%d", i)
		if n := cl.NodeOfSlot(int(c.ClusterKeySlot(ctx, key).Val())); keyOn[n] == "" {
			keyOn[n] = key
		}
	}
	// One dial attempt: go-redis's default of five per redirect takes ~1.7 s.
	c = redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs(), DialerRetries: 1})
	defer c.Close()
	cl.StopNode(0)
	cl.StopNode(0) // twice does nothing
	if err := c.Set(ctx, keyOn[0], "v", 0).Err(); err == nil {
		t.Errorf("SET %s on the stopped master succeeded", keyOn[0])
	}
	if err := c.Set(ctx, keyOn[1], "v", 0).Err(); err != nil {
		t.Errorf("SET %s on a live master right after another stopped: %v", keyOn[1], err)
	}
}
