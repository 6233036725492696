package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// replica is one refresher process slot; a restart reuses its identity
// and config.
type replica struct {
	identity string
	config   string
	log      string
	httpAddr string // its HTTP API, on loopback
	gateway  string // its WeChat-compatible gateway's base URL, on loopback

	mu   sync.Mutex // proc changes on a restart, while other faults look
	proc *child
}

func (rep *replica) current() *child {
	rep.mu.Lock()
	defer rep.mu.Unlock()
	return rep.proc
}

// replicaConfigYAML is the refresher's config (notes/refresher-contract.md)
// for one replica. Strings are written double-quoted: YAML accepts JSON's
// escapes, and strconv.Quote only produces those for ASCII.
func replicaConfigYAML(cfg *Config, identity, redisAddr, upstreamURL, secretEnv string, httpPort, gatewayPort int) string {
	q := strconv.Quote
	var b strings.Builder
	fmt.Fprintf(&b, "identity: %s\n", q(identity))
	fmt.Fprintf(&b, "redis:\n  addrs: [%s]\n", q(redisAddr))
	fmt.Fprintf(&b, "wechat:\n  base_url: %s\n  timeout: %s\n", q(upstreamURL), cfg.Cache.FetchTimeout)
	b.WriteString("apps:\n")
	for _, app := range AppIDs(cfg.Apps) {
		fmt.Fprintf(&b, "  - id: %s\n    secret_env: %s\n    mode: classic\n", q(app), q(secretEnv))
	}
	fmt.Fprintf(&b, "cache:\n  key_prefix: %s\n  refresh_ahead: %s\n  margin: %s\n  overlap: %s\n  lock_ttl: %s\n  fetch_timeout: %s\n  near_max_age: %s\n  daily_budget: 1500\n",
		q(cfg.KeyPrefix), cfg.Cache.RefreshAhead, cfg.Cache.Margin, cfg.Grace, cfg.Cache.LockTTL, cfg.Cache.FetchTimeout, cfg.Cache.NearMaxAge)
	fmt.Fprintf(&b, "lease:\n  name: %s\n  duration: %s\n  renew_deadline: %s\n  retry_period: %s\n",
		q(leaseKey(cfg)), cfg.Lease.Duration, cfg.Lease.RenewDeadline, cfg.Lease.RetryPeriod)
	fmt.Fprintf(&b, "http:\n  addr: %s\n", q("127.0.0.1:"+strconv.Itoa(httpPort)))
	fmt.Fprintf(&b, "gateway:\n  addr: %s\n  credentials:\n    - name: chaos\n      key_env: %s\n      apps: [\"*\"]\n",
		q("127.0.0.1:"+strconv.Itoa(gatewayPort)), q(GatewayKeyEnv))
	b.WriteString("log:\n  level: info\n  format: text\n")
	return b.String()
}

func leaseKey(cfg *Config) string { return cfg.KeyPrefix + "leader" }

// writeReplicaConfig writes rep's config and sets its path and the
// addresses of the replica's HTTP API and gateway.
func writeReplicaConfig(cfg *Config, dir string, rep *replica, redisAddr, upstreamURL string) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	gwPort, err := freePort()
	if err != nil {
		return err
	}
	path := filepath.Join(dir, rep.identity+".yaml")
	y := replicaConfigYAML(cfg, rep.identity, redisAddr, upstreamURL, SecretEnv, port, gwPort)
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	rep.config, rep.httpAddr, rep.gateway = path, "127.0.0.1:"+strconv.Itoa(port), "http://127.0.0.1:"+strconv.Itoa(gwPort)
	return nil
}

// Transition is a change of the lease holder, as polled from Redis.
type Transition struct {
	At   time.Time `json:"at"`
	From string    `json:"from"`
	To   string    `json:"to"` // "" = nobody holds the lease
}

// leaderWatch polls the lease key and records every change of holder.
type leaderWatch struct {
	key    string
	client *redis.Client

	mu          sync.Mutex
	current     string
	transitions []Transition
	changed     chan struct{} // closed and replaced on every change
}

func newLeaderWatch(addr, key string) *leaderWatch {
	return &leaderWatch{key: key, changed: make(chan struct{}), client: redis.NewClient(&redis.Options{
		Addr: addr, DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond,
		WriteTimeout: 200 * time.Millisecond, MaxRetries: -1,
	})}
}

// run polls every 50ms until ctx ends.
func (w *leaderWatch) run(ctx context.Context) {
	defer w.client.Close()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for ctx.Err() == nil {
		v, err := w.client.Get(ctx, w.key).Result()
		switch {
		case errors.Is(err, redis.Nil):
			w.observe("")
		case err == nil:
			id, _, _ := strings.Cut(v, "/")
			if i := strings.LastIndex(v, "/"); i >= 0 {
				id = v[:i] // identities may contain "/": the suffix is after the last one
			}
			w.observe(id)
		}
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
}

func (w *leaderWatch) observe(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if id == w.current {
		return
	}
	w.transitions = append(w.transitions, Transition{At: time.Now(), From: w.current, To: id})
	w.current = id
	close(w.changed)
	w.changed = make(chan struct{})
}

func (w *leaderWatch) leader() (string, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.current, w.changed
}

// waitLeader waits up to d for a holder other than not ("" = anyone).
func (w *leaderWatch) waitLeader(ctx context.Context, not string, d time.Duration) (string, time.Time, bool) {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		cur, changed := w.leader()
		if cur != "" && cur != not {
			w.mu.Lock()
			at := w.transitions[len(w.transitions)-1].At
			w.mu.Unlock()
			return cur, at, true
		}
		select {
		case <-changed:
		case <-deadline.C:
			return "", time.Time{}, false
		case <-ctx.Done():
			return "", time.Time{}, false
		}
	}
}

func (w *leaderWatch) history() []Transition {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Transition(nil), w.transitions...)
}
