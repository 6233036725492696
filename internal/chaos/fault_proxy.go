package chaos

import (
	"bytes"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// redisProxy is one reader process's way to Redis: a TCP relay on
// loopback, in this process, that a fault can cut. Only its reader
// connects to it, so cutting it partitions that one process and no other.
//
// It recognises a pub/sub connection by the SUBSCRIBE its client sends,
// so a fault can silence or drop just the change messages.
type redisProxy struct {
	name   string // the reader it serves, for log lines
	target string // redis-server's address
	ln     net.Listener

	mode atomic.Int32 // a proxyMode
	mute atomic.Bool  // swallow what Redis sends on pub/sub connections
	// muteApp, while muted, is the app whose messages are counted.
	muteApp atomic.Pointer[string]

	mu     sync.Mutex
	conns  map[*proxyConn]struct{}
	closed bool
	wg     sync.WaitGroup

	stats proxyCounters
}

type proxyMode int32

const (
	proxyPass      proxyMode = iota // forward both ways
	proxyRefuse                     // connections closed, new ones closed as soon as accepted
	proxyBlackhole                  // connections accepted, nothing forwarded either way
)

func (m proxyMode) String() string {
	switch m {
	case proxyRefuse:
		return "refuse"
	case proxyBlackhole:
		return "black-hole"
	}
	return "pass"
}

// proxyCounters count what a proxy did since it started.
type proxyCounters struct {
	Accepted   atomic.Int64 // connections accepted
	Refused    atomic.Int64 // closed at accept while refusing
	Cut        atomic.Int64 // open connections closed by a fault
	BlackHoled atomic.Int64 // connections that swallowed data in a black hole
	Swallowed  atomic.Int64 // bytes a black hole or a mute did not forward
	Subscribes atomic.Int64 // SUBSCRIBE commands seen (one per subscription and resubscription)
	MutedMsgs  atomic.Int64 // pub/sub messages swallowed by a mute
	MutedApp   atomic.Int64 // of which naming muteApp
}

// ProxyCounters is a snapshot of a proxy's counters.
type ProxyCounters struct {
	Accepted   int64 `json:"accepted"`
	Refused    int64 `json:"refused"`
	Cut        int64 `json:"cut"`
	BlackHoled int64 `json:"black_holed"`
	Swallowed  int64 `json:"swallowed_bytes"`
	Subscribes int64 `json:"subscribes"`
	MutedMsgs  int64 `json:"muted_messages"`
	MutedApp   int64 `json:"muted_messages_for_app"`
}

func (s ProxyCounters) sub(o ProxyCounters) ProxyCounters {
	return ProxyCounters{s.Accepted - o.Accepted, s.Refused - o.Refused, s.Cut - o.Cut, s.BlackHoled - o.BlackHoled,
		s.Swallowed - o.Swallowed, s.Subscribes - o.Subscribes, s.MutedMsgs - o.MutedMsgs, s.MutedApp - o.MutedApp}
}

func (p *redisProxy) counters() ProxyCounters {
	s := &p.stats
	return ProxyCounters{s.Accepted.Load(), s.Refused.Load(), s.Cut.Load(), s.BlackHoled.Load(), s.Swallowed.Load(),
		s.Subscribes.Load(), s.MutedMsgs.Load(), s.MutedApp.Load()}
}

// proxyConn is one relayed connection.
type proxyConn struct {
	client, server net.Conn
	pubsub         atomic.Bool // its client sent SUBSCRIBE
	// swallowing: it dropped data (a black hole, or a mute), so the two
	// ends no longer agree on the stream; it only waits to be closed.
	swallowing atomic.Bool

	mu     sync.Mutex
	closed bool
}

func (c *proxyConn) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	_ = c.client.Close()
	if c.server != nil {
		_ = c.server.Close()
	}
}

// setServer attaches the Redis end; false if the connection was closed
// meanwhile (then srv is closed too).
func (c *proxyConn) setServer(srv net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		_ = srv.Close()
		return false
	}
	c.server = srv
	return true
}

// startProxy listens on a free loopback port and relays to target.
func startProxy(name, target string) (*redisProxy, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("redis proxy for %s: %w", name, err)
	}
	p := &redisProxy{name: name, target: target, ln: ln, conns: map[*proxyConn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

func (p *redisProxy) addr() string { return p.ln.Addr().String() }

func (p *redisProxy) accept() {
	defer p.wg.Done()
	for {
		cl, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.stats.Accepted.Add(1)
		if proxyMode(p.mode.Load()) == proxyRefuse {
			p.stats.Refused.Add(1)
			_ = cl.Close()
			continue
		}
		c := &proxyConn{client: cl}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = cl.Close()
			return
		}
		p.conns[c] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(c)
	}
}

func (p *redisProxy) serve(c *proxyConn) {
	defer p.wg.Done()
	defer func() {
		c.close()
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
	}()
	if proxyMode(p.mode.Load()) == proxyBlackhole {
		// Accepted, and the client may write: nothing reaches Redis.
		c.swallowing.Store(true)
		p.stats.BlackHoled.Add(1)
		p.pump(c, c.client, nil, true)
		return
	}
	srv, err := net.DialTimeout("tcp4", p.target, 300*time.Millisecond)
	if err != nil || !c.setServer(srv) {
		return // Redis is down or restarting, or a cut came first: the client sees its connection close
	}
	done := make(chan struct{})
	go func() { defer close(done); p.pump(c, srv, c.client, false) }()
	p.pump(c, c.client, srv, true)
	c.close()
	<-done
}

// subscribeCmd is how go-redis writes a SUBSCRIBE command's name (RESP).
var subscribeCmd = []byte("$9\r\nsubscribe\r\n")

// messageFrame starts every pub/sub message Redis pushes.
var messageFrame = []byte("$7\r\nmessage\r\n")

// pump copies src to dst (dst nil: swallows everything) until either end
// closes. up is the client-to-Redis direction.
func (p *redisProxy) pump(c *proxyConn, src, dst net.Conn, up bool) {
	defer c.close()
	buf := make([]byte, 32<<10)
	var tail []byte // the end of the previous chunk, for a command split across two reads
	for {
		n, err := src.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			if up {
				seen := append(tail, chunk...)
				if k := bytes.Count(bytes.ToLower(seen), subscribeCmd); k > 0 {
					c.pubsub.Store(true)
					p.stats.Subscribes.Add(int64(k))
				}
				tail = append(tail[:0], seen[max(0, len(seen)-len(subscribeCmd)+1):]...)
			}
			if p.swallow(c, up, chunk) {
				p.stats.Swallowed.Add(int64(n))
			} else if _, werr := dst.Write(chunk); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// swallow decides whether chunk is dropped instead of forwarded. A
// connection that dropped anything keeps dropping until it is closed.
func (p *redisProxy) swallow(c *proxyConn, up bool, chunk []byte) bool {
	if proxyMode(p.mode.Load()) == proxyBlackhole && !c.swallowing.Swap(true) {
		p.stats.BlackHoled.Add(1)
	}
	if !up && c.pubsub.Load() && p.mute.Load() {
		c.swallowing.Store(true)
		p.stats.MutedMsgs.Add(int64(bytes.Count(chunk, messageFrame)))
		if app := p.muteApp.Load(); app != nil && *app != "" {
			p.stats.MutedApp.Add(int64(bytes.Count(chunk, []byte(*app+" "))))
		}
	}
	return c.swallowing.Load()
}

// cut partitions the reader from Redis in mode (proxyRefuse or
// proxyBlackhole). Refusing closes every open connection at once; a black
// hole leaves them open and forwards nothing, so the client waits for its
// timeouts.
func (p *redisProxy) cut(mode proxyMode) {
	p.mode.Store(int32(mode))
	if mode == proxyRefuse {
		p.closeConns(func(*proxyConn) bool { return true })
	}
}

// heal ends a cut. Connections that swallowed data in a black hole are
// closed (their two ends no longer agree on the stream, as after TCP gives
// up); the client reconnects.
func (p *redisProxy) heal() {
	p.mode.Store(int32(proxyPass))
	p.closeConns(func(c *proxyConn) bool { return c.swallowing.Load() })
}

// silencePubSub makes the reader's pub/sub connections, open and new,
// swallow whatever Redis sends: change messages published meanwhile never
// arrive. Messages naming app are counted.
func (p *redisProxy) silencePubSub(app string) {
	p.muteApp.Store(&app)
	p.mute.Store(true)
}

// dropPubSub ends the silence by closing every pub/sub connection, as a
// network fault would; go-redis reconnects and resubscribes. It returns how
// many it closed.
func (p *redisProxy) dropPubSub() int {
	p.mute.Store(false)
	return p.closeConns(func(c *proxyConn) bool { return c.pubsub.Load() })
}

// pubsubConns counts the open pub/sub connections.
func (p *redisProxy) pubsubConns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for c := range p.conns {
		if c.pubsub.Load() {
			n++
		}
	}
	return n
}

func (p *redisProxy) closeConns(which func(*proxyConn) bool) int {
	p.mu.Lock()
	var cs []*proxyConn
	for c := range p.conns {
		if which(c) {
			cs = append(cs, c)
		}
	}
	p.mu.Unlock()
	for _, c := range cs {
		c.close()
	}
	p.stats.Cut.Add(int64(len(cs)))
	return len(cs)
}

// close stops the proxy and every connection, and waits for its goroutines.
func (p *redisProxy) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	_ = p.ln.Close()
	p.closeConns(func(*proxyConn) bool { return true })
	p.wg.Wait()
}

// waitFor polls cond every 10ms for at most d; it reports whether cond
// held.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}
