package redistest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// clusterSlots is the number of hash slots of a Redis Cluster.
const clusterSlots = 16384

// Cluster is a Redis Cluster of masters without replicas, each a
// redis-server process on 127.0.0.1. The slots are split into equal
// contiguous ranges, in node order, so a test can tell which master owns a
// key's slot without asking.
type Cluster struct {
	tb    testing.TB
	nodes []*clusterNode
}

type clusterNode struct {
	port, busPort int
	dir           string
	first, last   int // the node's slot range, inclusive

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan error
	out    *bytes.Buffer
}

// StartCluster starts masters redis-server processes in cluster mode, joins
// them with CLUSTER MEET, gives each an equal range of slots, and returns
// once every node reports cluster_state:ok. They are killed at cleanup. The
// skip/fail rule of Binary applies.
func StartCluster(tb testing.TB, masters int) *Cluster {
	tb.Helper()
	if masters < 1 || masters > 64 {
		tb.Fatalf("redistest: StartCluster(%d): want 1 to 64 masters", masters)
	}
	bin := Binary(tb)
	cl := &Cluster{tb: tb}
	tb.Cleanup(cl.stop)
	// Started together: a master refuses to call the cluster ok until 2 s
	// after its start (Redis's CLUSTER_WRITABLE_DELAY), so that delay is
	// paid once, not once per node.
	cl.nodes = make([]*clusterNode, masters)
	errs := make([]error, masters)
	var wg sync.WaitGroup
	for i := range cl.nodes {
		n := &clusterNode{
			dir:   tb.TempDir(),
			first: i * clusterSlots / masters,
			last:  (i+1)*clusterSlots/masters - 1,
		}
		cl.nodes[i] = n
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = n.startOnFreePorts(bin)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		tb.Fatalf("redistest: starting cluster nodes: %v", err)
	}
	if err := cl.form(10 * time.Second); err != nil {
		tb.Fatalf("redistest: forming the cluster: %v", err)
	}
	return cl
}

// form gives each node its slots, introduces every node to every other,
// and waits until every node sees every slot served.
func (cl *Cluster) form(within time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	clients := make([]*redis.Client, len(cl.nodes))
	for i, n := range cl.nodes {
		clients[i] = redis.NewClient(&redis.Options{Addr: n.addr(), MaxRetries: -1})
		defer clients[i].Close()
	}
	for i, n := range cl.nodes {
		// Distinct config epochs up front, as redis-cli --cluster create
		// does: otherwise the nodes resolve their epoch collision slowly.
		if err := clients[i].Do(ctx, "CLUSTER", "SET-CONFIG-EPOCH", i+1).Err(); err != nil {
			return fmt.Errorf("node %s: CLUSTER SET-CONFIG-EPOCH: %w", n.addr(), err)
		}
		if err := clients[i].ClusterAddSlotsRange(ctx, n.first, n.last).Err(); err != nil {
			return fmt.Errorf("node %s: CLUSTER ADDSLOTSRANGE %d %d: %w", n.addr(), n.first, n.last, err)
		}
	}
	// Every pair meets directly: learning of a third node by gossip alone
	// sometimes takes another second or two.
	for i := range cl.nodes {
		for _, n := range cl.nodes[i+1:] {
			if err := clients[i].Do(ctx, "CLUSTER", "MEET", "127.0.0.1", n.port, n.busPort).Err(); err != nil {
				return fmt.Errorf("node %s: CLUSTER MEET %s: %w", cl.nodes[i].addr(), n.addr(), err)
			}
		}
	}
	want := map[string]string{
		"cluster_state":          "ok",
		"cluster_slots_ok":       strconv.Itoa(clusterSlots),
		"cluster_known_nodes":    strconv.Itoa(len(cl.nodes)),
		"cluster_size":           strconv.Itoa(len(cl.nodes)),
		"cluster_slots_assigned": strconv.Itoa(clusterSlots),
	}
	for i, c := range clients {
		for {
			info, err := c.ClusterInfo(ctx).Result()
			if err == nil {
				if bad := infoMismatch(info, want); bad == "" {
					break
				} else if ctx.Err() != nil {
					return fmt.Errorf("node %s not ready within %v: %s", cl.nodes[i].addr(), within, bad)
				}
			} else if ctx.Err() != nil {
				return fmt.Errorf("node %s: CLUSTER INFO: %w", cl.nodes[i].addr(), err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond): // polling gossip: no signal to await
			}
		}
	}
	return nil
}

// infoMismatch names the first CLUSTER INFO field that differs from want,
// or returns "".
func infoMismatch(info string, want map[string]string) string {
	got := map[string]string{}
	for _, line := range strings.Split(info, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			got[k] = v
		}
	}
	for k, v := range want {
		if got[k] != v {
			return fmt.Sprintf("%s is %q, want %q", k, got[k], v)
		}
	}
	return ""
}

// Addrs are the masters' host:port, in node order.
func (cl *Cluster) Addrs() []string {
	addrs := make([]string, len(cl.nodes))
	for i, n := range cl.nodes {
		addrs[i] = n.addr()
	}
	return addrs
}

// Client returns a new cluster client seeded with every node, closed at
// cleanup.
func (cl *Cluster) Client() *redis.ClusterClient {
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()})
	cl.tb.Cleanup(func() { _ = c.Close() })
	return c
}

// NodeClient returns a plain client to node i alone, closed at cleanup: it
// sees only the keys that node holds.
func (cl *Cluster) NodeClient(i int) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: cl.nodes[i].addr()})
	cl.tb.Cleanup(func() { _ = c.Close() })
	return c
}

// NodeOfSlot is the index of the node that serves slot.
func (cl *Cluster) NodeOfSlot(slot int) int {
	for i, n := range cl.nodes {
		if slot >= n.first && slot <= n.last {
			return i
		}
	}
	cl.tb.Fatalf("redistest: slot %d is outside 0..%d", slot, clusterSlots-1)
	return -1
}

// StopNode kills node i (SIGKILL, an outage) and waits for it to exit. Its
// slots go unserved at once; the other masters keep serving theirs until
// they agree it failed, after the 2 s node timeout, and then refuse every
// command (cluster_state:fail, no replica can take over).
func (cl *Cluster) StopNode(i int) { cl.nodes[i].kill() }

// stop kills every node and waits for it to exit.
func (cl *Cluster) stop() {
	for _, n := range cl.nodes {
		n.kill()
	}
}

func (n *clusterNode) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.port)) }

// startOnFreePorts starts the node on a free port and a free bus port,
// trying new ones if another process took them first.
func (n *clusterNode) startOnFreePorts(bin string) error {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if n.port, err = FreePort(); err != nil {
			return err
		}
		if n.busPort, err = FreePort(); err != nil {
			return err
		}
		if n.port == n.busPort {
			err = errors.New("the kernel gave the same free port twice")
			continue
		}
		if err = n.start(bin); err == nil {
			return nil
		}
	}
	return err
}

func (n *clusterNode) start(bin string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.out = &bytes.Buffer{}
	cmd, exited, err := launch(bin, n.port, n.out, nil,
		"--cluster-port", strconv.Itoa(n.busPort),
		"--cluster-enabled", "yes",
		"--cluster-config-file", filepath.Join(n.dir, "nodes-"+strconv.Itoa(n.port)+".conf"),
		"--cluster-node-timeout", "2000",
		"--dir", n.dir,
	)
	if err != nil {
		return fmt.Errorf("cluster node (bus port %d): %w", n.busPort, err)
	}
	n.cmd, n.exited = cmd, exited
	return nil
}

func (n *clusterNode) kill() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Kill()
	<-n.exited
	n.cmd = nil
}
