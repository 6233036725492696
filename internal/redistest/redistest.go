// Package redistest starts real redis-server processes for tests, each on a
// free loopback port, and stops them when the test ends. It never touches
// port 6379 and never talks to anything but 127.0.0.1.
//
// Without a redis-server binary on PATH the calling test is skipped with the
// reason, except when the CI environment variable is "true": there a missing
// server is a failure, so CI can never pass by skipping.
package redistest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is one redis-server process on 127.0.0.1.
type Server struct {
	tb   testing.TB
	bin  string
	port int
	dir  string

	args []string // extra redis-server arguments (Option)
	pki  *PKI     // non-nil: TLS only, on port (WithTLS)

	mu            sync.Mutex
	cmd           *exec.Cmd
	exited        chan error // receives cmd.Wait's result once
	thawAtCleanup bool       // a Freeze registered a Thaw with tb.Cleanup
}

// Binary returns the path of redis-server, skipping tb (or failing it under
// CI=true) if there is none.
func Binary(tb testing.TB) string {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		msg := "redis-server not found on PATH (Debian: apt-get install -y redis-server; or run make test, which installs it)"
		if os.Getenv("CI") == "true" {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
	return bin
}

// Option configures a server Start starts.
type Option func(*Server)

// WithArgs adds redis-server command-line arguments ("--maxmemory-policy",
// "allkeys-lru").
func WithArgs(args ...string) Option {
	return func(s *Server) { s.args = append(s.args, args...) }
}

// WithTLS makes the server speak TLS only (no plain-text port), with p's
// server certificate, requiring client certificates signed by p's CA.
// Client and the readiness probe use p.ClientTLS.
func WithTLS(p *PKI) Option { return func(s *Server) { s.pki = p } }

// Start starts a redis-server on a free loopback port and registers its
// shutdown with tb.Cleanup. It returns once the server answers PING.
func Start(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	s := &Server{tb: tb, bin: Binary(tb), dir: tb.TempDir()}
	for _, o := range opts {
		o(s)
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := FreePort()
		if err != nil {
			tb.Fatalf("redistest: %v", err)
		}
		s.port = port
		if lastErr = s.start(); lastErr == nil {
			tb.Cleanup(s.Stop)
			return s
		}
	}
	tb.Fatalf("redistest: could not start redis-server: %v", lastErr)
	return nil
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Port is the server's port.
func (s *Server) Port() int { return s.port }

// Client returns a new go-redis client for the server as its default
// (all-powerful) user, closed at cleanup.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(s.options())
	s.tb.Cleanup(func() { _ = c.Close() })
	return c
}

// options are the default user's client options for the server.
func (s *Server) options() *redis.Options {
	o := &redis.Options{Addr: s.Addr()}
	if s.pki != nil {
		o.TLSConfig = s.pki.ClientTLS()
	}
	return o
}

// Stop kills the server (SIGKILL: an outage, not a clean shutdown) and waits
// for it to exit. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// Restart stops the server and starts an empty one on the same port: all
// data is lost, as after a crash of a Redis without persistence.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Stop()
	_ = os.Remove(filepath.Join(s.dir, "dump.rdb"))
	if err := s.Resume(); err != nil {
		s.tb.Fatalf("redistest: restart: %v", err)
	}
}

// StopKeepingData saves the data set to disk and then kills the server: an
// outage after which Resume brings the same data back (keys keep their
// absolute expiry), as with a Redis that persists.
func (s *Server) StopKeepingData() error {
	c := redis.NewClient(s.options())
	defer c.Close()
	if err := c.Save(context.Background()).Err(); err != nil {
		return fmt.Errorf("redistest: SAVE before stopping: %w", err)
	}
	s.Stop()
	return nil
}

// Resume starts a stopped server again on the same port, with the data the
// last StopKeepingData saved, or none.
func (s *Server) Resume() error {
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		if err = s.start(); err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond) // the old socket may linger briefly
	}
	return err
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	args := append([]string{"--dir", s.dir}, s.args...)
	if s.pki != nil {
		args = append(append(args, "--port", "0", "--tls-port", strconv.Itoa(s.port)), s.pki.serverArgs()...)
	}
	cmd, exited, err := launch(s.bin, s.port, &bytes.Buffer{}, s.options(), args...)
	if err != nil {
		return err
	}
	s.cmd, s.exited = cmd, exited
	return nil
}

// launch starts a redis-server on 127.0.0.1:port, with no persistence of its
// own and extra arguments (later ones win), and returns once it answers a
// PING sent with probe's options (nil: plain text). exited receives the
// process's Wait result exactly once.
func launch(bin string, port int, out *bytes.Buffer, probe *redis.Options, extra ...string) (cmd *exec.Cmd, exited chan error, err error) {
	args := append([]string{
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--protected-mode", "yes",
	}, extra...)
	cmd = exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	exited = make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	po := redis.Options{}
	if probe != nil {
		po = *probe
	}
	po.Addr, po.MaxRetries, po.DialTimeout = net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), -1, 200*time.Millisecond
	c := redis.NewClient(&po)
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return cmd, exited, nil
		}
		select {
		case werr := <-exited:
			return nil, nil, fmt.Errorf("redis-server on port %d exited: %v: %s", port, werr, out.String())
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			return nil, nil, fmt.Errorf("redis-server on port %d did not answer PING within 10s: %v", port, err)
		}
		time.Sleep(10 * time.Millisecond) // polling a starting process: no signal to await
	}
}

// FreePort asks the kernel for a free TCP port on 127.0.0.1.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
