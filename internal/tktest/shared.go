package tktest

import (
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/tokenkeeper/tokenkeeper/internal/redistest"
)

// Main runs a package's tests and then stops the real servers its
// scenarios shared. Call it from the package's TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(tktest.Main(m)) }
func Main(m *testing.M) int {
	shared.mu.Lock()
	shared.enabled = true
	shared.mu.Unlock()
	code := m.Run()
	shared.life.stop()
	return code
}

// shared holds the servers started once for every scenario of a test
// binary. A start that failed (no redis-server) is remembered, so every
// later scenario skips or fails the same way at once.
var shared struct {
	mu      sync.Mutex
	enabled bool // Main runs the tests: shared servers are stopped at its end
	life    lifetimeTB

	server     *redistest.Server
	serverErr  *startFailure
	cluster    *redistest.Cluster
	clusterErr *startFailure
}

// masters is the size of the shared cluster: every app's keys live on one
// master, and three are enough for the apps of a test to cover all of them.
const masters = 3

func sharedServer(t *testing.T) string {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if !shared.enabled {
		return redistest.Start(t).Addr()
	}
	if shared.server == nil && shared.serverErr == nil {
		shared.serverErr = shared.life.try(func() { shared.server = redistest.Start(&shared.life) })
	}
	shared.serverErr.report(t)
	return shared.server.Addr()
}

func sharedCluster(t *testing.T) []string {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if !shared.enabled {
		return redistest.StartCluster(t, masters).Addrs()
	}
	if shared.cluster == nil && shared.clusterErr == nil {
		shared.clusterErr = shared.life.try(func() { shared.cluster = redistest.StartCluster(&shared.life, masters) })
	}
	shared.clusterErr.report(t)
	return shared.cluster.Addrs()
}

func (s *lifetimeTB) stop() {
	s.mu.Lock()
	fns := s.cleanups
	s.cleanups = nil
	s.mu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
}

// startFailure is why a shared server could not start: a skip (no
// redis-server) or a failure.
type startFailure struct {
	msg  string
	skip bool
}

// report makes t skip or fail as the shared start did; nil does nothing.
func (f *startFailure) report(t *testing.T) {
	t.Helper()
	switch {
	case f == nil:
	case f.skip:
		t.Skip(f.msg)
	default:
		t.Fatal(f.msg)
	}
}

// lifetimeTB is the testing.TB of the shared servers: it lives as long as
// the test binary. Its cleanups run when Main's tests are done; Fatal and
// Skip end the start (try turns them into a startFailure). It implements
// what internal/redistest calls; the embedded TB is nil, so any other
// method panics, which a change to redistest would show at once.
type lifetimeTB struct {
	testing.TB
	mu       sync.Mutex
	cleanups []func()
}

// try runs start, turning a Fatal or Skip of the lifetime TB into the
// returned startFailure.
func (s *lifetimeTB) try(start func()) (failed *startFailure) {
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(startFailure)
			if !ok {
				panic(r)
			}
			failed = &f
		}
	}()
	start()
	return nil
}

func (s *lifetimeTB) Helper() {}

func (s *lifetimeTB) Cleanup(fn func()) {
	s.mu.Lock()
	s.cleanups = append(s.cleanups, fn)
	s.mu.Unlock()
}

func (s *lifetimeTB) TempDir() string {
	dir, err := os.MkdirTemp("", "tktest-")
	if err != nil {
		panic(startFailure{msg: "tktest: " + err.Error()})
	}
	s.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func (s *lifetimeTB) Fatal(args ...any) { panic(startFailure{msg: fmt.Sprint(args...)}) }
func (s *lifetimeTB) Fatalf(format string, args ...any) {
	panic(startFailure{msg: fmt.Sprintf(format, args...)})
}
func (s *lifetimeTB) Skip(args ...any) { panic(startFailure{msg: fmt.Sprint(args...), skip: true}) }
func (s *lifetimeTB) Skipf(format string, args ...any) {
	panic(startFailure{msg: fmt.Sprintf(format, args...), skip: true})
}
func (s *lifetimeTB) Logf(format string, args ...any) {}
func (s *lifetimeTB) Name() string                    { return "tktest-shared" }
