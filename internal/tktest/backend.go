// Package tktest runs a cache scenario against every Redis the cache is
// meant to work on: miniredis (fast, with a clock the test moves), a real
// redis-server and a real 3-master Redis Cluster, the way redsync runs
// every test against every driver.
//
// ForEachBackend runs a scenario once per backend, each as a subtest named
// after it. The real servers are started once per test binary and shared
// by every scenario of the package when its TestMain calls Main; each
// scenario starts on an empty data set (FLUSHALL on every master), with
// clients of its own that it can cut off Redis (Down) without stopping the
// shared server. Without Main, each scenario starts servers of its own.
//
// What it does not give: a real server's TTLs run on the wall clock, so
// FastForward moves only miniredis; a scenario that needs a key to expire
// when the test's clock moves says so with Backend.Kind. The skip/fail rule
// of internal/redistest applies: without redis-server the real backends
// skip, and fail under CI=true. It imports no tokenkeeper package, so the
// package under test can use it from its internal tests too.
package tktest

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// Kind names a backend; it is also the subtest's name.
type Kind string

const (
	Miniredis   Kind = "miniredis"
	RedisServer Kind = "redis-server"
	Cluster     Kind = "cluster"
)

// Kinds is every backend, in the order ForEachBackend runs them.
var Kinds = []Kind{Miniredis, RedisServer, Cluster}

// Backend is one scenario's Redis.
type Backend struct {
	Kind Kind
	// Mini is the scenario's own miniredis (Kind Miniredis only), for the
	// fault injection only miniredis offers (SetError, FastForward).
	Mini *miniredis.Miniredis

	t     testing.TB
	addrs []string // the server, or every master of the cluster
	cut   *cutter
}

// Client is a new client of the backend, as another process would open
// (a *redis.ClusterClient on the cluster), closed at cleanup. Down cuts it
// off.
func (b *Backend) Client() redis.UniversalClient {
	return b.ClientWith(func(*redis.UniversalOptions) {})
}

// ClientWith is Client with options of the caller's (timeouts, retries);
// Addrs and Dialer are the backend's. A client dials once per attempt
// (DialerRetries 1, as the refresher's does): go-redis's default of five
// dials 100 ms apart makes every command of an outage scenario take
// seconds, and proves nothing more.
func (b *Backend) ClientWith(tune func(*redis.UniversalOptions)) redis.UniversalClient {
	o := &redis.UniversalOptions{DialerRetries: 1}
	tune(o)
	o.Addrs, o.Dialer = b.addrs, b.cut.dial
	var c redis.UniversalClient
	if b.Kind == Cluster {
		c = redis.NewClusterClient(o.Cluster())
	} else {
		c = redis.NewClient(o.Simple())
	}
	b.t.Cleanup(func() { _ = c.Close() })
	return c
}

// Down is a Redis outage for this scenario: every connection of its
// clients is closed and every new dial refused, until the scenario ends.
// On miniredis the server itself is closed. The shared real servers keep
// running for the next scenario.
func (b *Backend) Down() {
	if b.Mini != nil {
		b.Mini.Close()
	}
	b.cut.down()
}

// FastForward moves miniredis's TTL clock by d, with the test's clock;
// on a real server it does nothing (its TTLs run on the wall clock).
func (b *Backend) FastForward(d time.Duration) {
	if b.Mini != nil {
		b.Mini.FastForward(d)
	}
}

// ForEachBackend runs scenario as a subtest on each backend of kinds (all
// of Kinds if none).
func ForEachBackend(t *testing.T, scenario func(t *testing.T, b *Backend), kinds ...Kind) {
	t.Helper()
	if len(kinds) == 0 {
		kinds = Kinds
	}
	for _, k := range kinds {
		t.Run(string(k), func(t *testing.T) {
			scenario(t, Open(t, k))
		})
	}
}

// Open is the backend of kind k for t alone, for a test that is not run
// on every backend.
func Open(t *testing.T, k Kind) *Backend {
	t.Helper()
	b := &Backend{Kind: k, t: t, cut: &cutter{}}
	t.Cleanup(b.cut.down) // before the clients close: nothing lingers on a shared server
	switch k {
	case Miniredis:
		b.Mini = miniredis.RunT(t)
		b.addrs = []string{b.Mini.Addr()}
	case RedisServer:
		b.addrs = []string{sharedServer(t)}
	case Cluster:
		b.addrs = sharedCluster(t)
	default:
		t.Fatalf("tktest: unknown backend %q", k)
	}
	if k != Miniredis {
		flushAll(t, b.addrs)
	}
	return b
}

// flushAll empties every master, so a scenario never sees another's keys.
func flushAll(t *testing.T, addrs []string) {
	t.Helper()
	for _, addr := range addrs {
		c := redis.NewClient(&redis.Options{Addr: addr})
		err := c.FlushAll(context.Background()).Err()
		_ = c.Close()
		if err != nil {
			t.Fatalf("tktest: FLUSHALL on %s: %v", addr, err)
		}
	}
}

// cutter dials for a scenario's clients and can cut them all off.
type cutter struct {
	mu    sync.Mutex
	isCut bool
	conns []net.Conn
}

func (c *cutter) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.isCut {
		return nil, &net.OpError{Op: "dial", Net: network, Err: errCut}
	}
	conn, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
	if err == nil {
		c.conns = append(c.conns, conn)
	}
	return conn, err
}

func (c *cutter) down() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.isCut = true
	for _, conn := range c.conns {
		_ = conn.Close()
	}
	c.conns = nil
}

type cutError struct{}

func (cutError) Error() string { return "tktest: redis cut off for this scenario (connection refused)" }

var errCut error = cutError{}
