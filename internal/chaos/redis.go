package chaos

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisServer is a redis-server on a fixed loopback port that the run can
// kill, restart empty, or pause.
type redisServer struct {
	bin, dir string
	port     int
	procs    *procTable
	starts   int

	mu  sync.Mutex // cur changes on a restart while other faults look
	cur *child
}

// current is the running server process.
func (r *redisServer) current() *child {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur
}

func startRedis(bin, dir string, procs *procTable) (*redisServer, error) {
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		r := &redisServer{bin: bin, dir: dir, port: port, procs: procs}
		if lastErr = r.start(); lastErr == nil {
			return r, nil
		}
	}
	return nil, fmt.Errorf("redis-server: %w", lastErr)
}

func (r *redisServer) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

// start runs an empty, non-persistent server on r.port and waits for PING.
func (r *redisServer) start() error {
	r.starts++
	c, err := r.procs.start(fmt.Sprintf("redis-server#%d", r.starts), r.bin, []string{
		"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", r.dir, "--protected-mode", "yes",
	}, os.Environ(), filepath.Join(r.dir, "redis.log"), nil)
	if err != nil {
		return err
	}
	client := redis.NewClient(&redis.Options{Addr: r.addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer client.Close()
	for i := 0; i < 200; i++ { // 200 x (<=200ms + 10ms): at most ~40s
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err = client.Ping(ctx).Err()
		cancel()
		if err == nil {
			r.mu.Lock()
			r.cur = c
			r.mu.Unlock()
			return nil
		}
		if c.exited() {
			return fmt.Errorf("redis-server on port %d exited at start (see %s)", r.port, filepath.Join(r.dir, "redis.log"))
		}
		time.Sleep(10 * time.Millisecond) // a starting process gives no signal to await
	}
	c.kill()
	return fmt.Errorf("redis-server on port %d did not answer PING: %v", r.port, err)
}

// restart kills the server and starts an empty one on the same port: every
// key is lost, as after a crash of a Redis without persistence.
func (r *redisServer) restart() error {
	r.current().kill()
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		if err = r.start(); err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond) // the old socket may linger
	}
	return err
}

func (r *redisServer) pause() error  { return r.current().signal(syscall.SIGSTOP) }
func (r *redisServer) resume() error { return r.current().signal(syscall.SIGCONT) }

func freePort() (int, error) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
