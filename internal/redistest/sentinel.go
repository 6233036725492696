package redistest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelMasterName is the name under which a SentinelGroup's sentinels
// monitor its master.
const SentinelMasterName = "redistest"

// SentinelDownAfter is how long a SentinelGroup's sentinels wait for an
// unanswered master before they call it down (down-after-milliseconds):
// short, so a failover test is quick.
const SentinelDownAfter = time.Second

// SentinelGroup is a Redis master, one replica and three sentinels with a
// quorum of two, each a process on 127.0.0.1, as a small production
// Sentinel deployment has them.
type SentinelGroup struct {
	tb testing.TB
	// Master and Replica are the servers as started: after a failover the
	// replica is the master (MasterAddr says which one is).
	Master, Replica *Server
	sentinels       []*sentinelProc
}

type sentinelProc struct {
	port int
	dir  string
	out  *syncBuffer

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan error
}

// StartSentinel starts the group (opts apply to both data servers) and
// returns once every sentinel knows the replica and the two other
// sentinels: from then on killing the master makes them fail over. All
// processes are killed at cleanup. The skip/fail rule of Binary applies.
func StartSentinel(tb testing.TB, opts ...Option) *SentinelGroup {
	tb.Helper()
	g := &SentinelGroup{tb: tb}
	g.Master = Start(tb, opts...)
	g.Replica = Start(tb, append(append([]Option(nil), opts...), WithArgs("--replicaof", "127.0.0.1", strconv.Itoa(g.Master.Port())))...)
	tb.Cleanup(g.stopSentinels)
	bin := Binary(tb)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range 3 {
		sp := &sentinelProc{dir: tb.TempDir()}
		g.sentinels = append(g.sentinels, sp)
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = sp.startOnFreePort(bin, g.Master.Port())
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		tb.Fatalf("redistest: starting sentinels: %v", err)
	}
	if err := g.awaitFormed(20 * time.Second); err != nil {
		tb.Fatalf("redistest: sentinel group: %v", err)
	}
	return g
}

// SentinelAddrs are the sentinels' host:port.
func (g *SentinelGroup) SentinelAddrs() []string {
	addrs := make([]string, len(g.sentinels))
	for i, sp := range g.sentinels {
		addrs[i] = sp.addr()
	}
	return addrs
}

// MasterAddr is the master's address as the first sentinel that answers
// reports it.
func (g *SentinelGroup) MasterAddr(ctx context.Context) (string, error) {
	var errs []error
	for _, sp := range g.sentinels {
		c := redis.NewSentinelClient(&redis.Options{Addr: sp.addr(), MaxRetries: -1})
		hp, err := c.GetMasterAddrByName(ctx, SentinelMasterName).Result()
		c.Close()
		if err == nil && len(hp) == 2 {
			return net.JoinHostPort(hp[0], hp[1]), nil
		}
		errs = append(errs, fmt.Errorf("sentinel %s: %v", sp.addr(), err))
	}
	return "", errors.Join(errs...)
}

// AwaitMaster waits until every sentinel reports want as the master.
func (g *SentinelGroup) AwaitMaster(want string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for _, sp := range g.sentinels {
		c := redis.NewSentinelClient(&redis.Options{Addr: sp.addr(), MaxRetries: -1})
		for {
			hp, err := c.GetMasterAddrByName(context.Background(), SentinelMasterName).Result()
			if err == nil && len(hp) == 2 && net.JoinHostPort(hp[0], hp[1]) == want {
				break
			}
			if time.Now().After(deadline) {
				c.Close()
				return fmt.Errorf("sentinel %s still reports master %v (err %v) after %v, want %s", sp.addr(), hp, err, within, want)
			}
			time.Sleep(20 * time.Millisecond) // polling sentinel state: no signal to await
		}
		c.Close()
	}
	return nil
}

// awaitFormed waits until each sentinel sees the master up, the replica
// and both other sentinels.
func (g *SentinelGroup) awaitFormed(within time.Duration) error {
	deadline := time.Now().Add(within)
	for _, sp := range g.sentinels {
		c := redis.NewSentinelClient(&redis.Options{Addr: sp.addr(), MaxRetries: -1})
		for {
			m, err := c.Master(context.Background(), SentinelMasterName).Result()
			if err == nil && m["num-slaves"] == "1" && m["num-other-sentinels"] == "2" && m["flags"] == "master" {
				break
			}
			if time.Now().After(deadline) {
				c.Close()
				return fmt.Errorf("sentinel %s not ready within %v: %v %v; log:\n%s", sp.addr(), within, m, err, sp.log())
			}
			time.Sleep(50 * time.Millisecond) // polling gossip: no signal to await
		}
		c.Close()
	}
	// The replica must hold the data set before a failover can keep it.
	rc := g.Replica.Client()
	for {
		info, err := rc.Info(context.Background(), "replication").Result()
		if err == nil && strings.Contains(info, "master_link_status:up") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("replica %s not in sync within %v: %v", g.Replica.Addr(), within, err)
		}
		time.Sleep(20 * time.Millisecond) // polling replication state: no signal to await
	}
}

func (g *SentinelGroup) stopSentinels() {
	for _, sp := range g.sentinels {
		sp.kill()
	}
}

func (sp *sentinelProc) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(sp.port)) }

func (sp *sentinelProc) log() string { return sp.out.String() }

// syncBuffer is a bytes.Buffer a running process may write while a test
// reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (sp *sentinelProc) startOnFreePort(bin string, masterPort int) error {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if sp.port, err = FreePort(); err != nil {
			return err
		}
		if err = sp.start(bin, masterPort); err == nil {
			return nil
		}
	}
	return err
}

// start writes the sentinel's configuration (a sentinel rewrites its file,
// so each has its own) and starts it.
func (sp *sentinelProc) start(bin string, masterPort int) error {
	conf := filepath.Join(sp.dir, "sentinel.conf")
	text := fmt.Sprintf(`port %[1]d
bind 127.0.0.1
protected-mode yes
dir %[2]s
sentinel monitor %[3]s 127.0.0.1 %[4]d 2
sentinel down-after-milliseconds %[3]s %[5]d
sentinel failover-timeout %[3]s 10000
sentinel parallel-syncs %[3]s 1
`, sp.port, sp.dir, SentinelMasterName, masterPort, SentinelDownAfter.Milliseconds())
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		return err
	}
	sp.mu.Lock()
	defer sp.mu.Unlock()
	sp.out = &syncBuffer{}
	cmd := exec.Command(bin, conf, "--sentinel")
	cmd.Stdout, cmd.Stderr = sp.out, sp.out
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	c := redis.NewClient(&redis.Options{Addr: sp.addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			sp.cmd, sp.exited = cmd, exited
			return nil
		}
		select {
		case werr := <-exited:
			return fmt.Errorf("sentinel on port %d exited: %v: %s", sp.port, werr, sp.out.String())
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("sentinel on port %d did not answer PING within 10s: %v", sp.port, err)
		}
		time.Sleep(10 * time.Millisecond) // polling a starting process: no signal to await
	}
}

func (sp *sentinelProc) kill() {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.cmd == nil {
		return
	}
	_ = sp.cmd.Process.Kill()
	<-sp.exited
	sp.cmd = nil
}
