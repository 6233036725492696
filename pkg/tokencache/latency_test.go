package tokencache_test

import (
	"math"
	"math/bits"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
)

// latencies is a log-linear histogram of durations: exact below 128 ns,
// then 64 buckets per power of two (a bucket is at most 1.6% wide). Adding
// a sample never allocates, so measuring does not disturb what is measured
// (no garbage, no GC), and one per goroutine needs no synchronisation.
type latencies struct {
	counts [128 + 64*48]uint64
	n      uint64
	max    time.Duration
}

func latencyBucket(ns uint64) int {
	if ns < 128 {
		return int(ns)
	}
	shift := bits.Len64(ns) - 7 // keep the top 7 bits: 64 <= ns>>shift < 128
	return 128 + (shift-1)*64 + int(ns>>shift) - 64
}

// bucketTop is the largest duration bucket i holds: percentiles are
// reported rounded up, never flattered.
func bucketTop(i int) time.Duration {
	if i < 128 {
		return time.Duration(i)
	}
	shift := (i-128)/64 + 1
	mant := uint64((i-128)%64 + 64)
	return time.Duration((mant+1)<<shift - 1)
}

func (h *latencies) add(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[latencyBucket(uint64(d))]++
	h.n++
	if d > h.max {
		h.max = d
	}
}

func (h *latencies) merge(o *latencies) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// quantile is the smallest bucket top at or below which a fraction q of the
// samples fall.
func (h *latencies) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	var cum uint64
	for i, c := range h.counts {
		cum += c
		if cum >= rank {
			return min(bucketTop(i), h.max)
		}
	}
	return h.max
}

// atLeast counts the samples of d or more (to the bucket's resolution).
func (h *latencies) atLeast(d time.Duration) uint64 {
	var n uint64
	for i := latencyBucket(uint64(d)); i < len(h.counts); i++ {
		n += h.counts[i]
	}
	return n
}

// report adds the percentiles of h to b's metrics, in nanoseconds.
func (h *latencies) report(b *testing.B) {
	b.ReportMetric(float64(h.quantile(0.5)), "p50-ns")
	b.ReportMetric(float64(h.quantile(0.99)), "p99-ns")
	b.ReportMetric(float64(h.quantile(0.999)), "p99.9-ns")
	b.ReportMetric(float64(h.quantile(0.9999)), "p99.99-ns")
	b.ReportMetric(float64(h.max), "max-ns")
	b.ReportMetric(float64(h.atLeast(time.Millisecond)), "calls>=1ms")
}

// latencySink collects the histograms of RunParallel's goroutines.
type latencySink struct {
	mu  sync.Mutex
	all latencies
}

func (s *latencySink) add(h *latencies) {
	s.mu.Lock()
	s.all.merge(h)
	s.mu.Unlock()
}

func TestLatencyHistogram(t *testing.T) {
	for _, ns := range []uint64{0, 1, 127, 128, 129, 255, 256, 1000, 999_999, 1_000_000, 5e9, 1 << 50} {
		i := latencyBucket(ns)
		if top := bucketTop(i); uint64(top) < ns || i > 0 && uint64(bucketTop(i-1)) >= ns {
			t.Errorf("%d ns: bucket %d tops at %v, the one below at %v", ns, i, top, bucketTop(i-1))
		}
		if top := uint64(bucketTop(i)); ns >= 128 && float64(top-ns) > float64(ns)/64 {
			t.Errorf("%d ns: bucket %d tops at %d: more than 1/64 above", ns, i, top)
		}
	}
	var h latencies
	for i := 1; i <= 10000; i++ {
		h.add(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 5 * time.Millisecond}, {0.99, 9900 * time.Microsecond}, {0.9999, 9999 * time.Microsecond}, {1, 10 * time.Millisecond}} {
		if got := h.quantile(c.q); got < c.want || float64(got-c.want) > float64(c.want)/64 {
			t.Errorf("q%v = %v, want %v (+1/64)", c.q, got, c.want)
		}
	}
	if n := h.atLeast(time.Millisecond); n < 9000 || n > 9002 {
		t.Errorf("atLeast(1ms) = %d, want about 9001", n)
	}
}

// parallelFloor times n iterations of op spread over GOMAXPROCS goroutines,
// as RunParallel spreads them: the wall time per iteration.
func parallelFloor(n int, op func() bool) time.Duration {
	p := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	start := time.Now()
	for g := 0; g < p; g++ {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			for i := 0; i < k; i++ {
				if !op() {
					panic("floor op failed")
				}
			}
		}(n/p + boolInt(g < n%p))
	}
	wg.Wait()
	return time.Since(start) / time.Duration(max(n, 1))
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// delayProxy is a loopback TCP proxy that delays every byte by oneWay in
// each direction: a Redis oneWay*2 of round trip away, for commands and
// pub/sub alike. Ordering and throughput are kept; only latency is added.
type delayProxy struct {
	ln     net.Listener
	target string
	oneWay time.Duration

	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func startDelayProxy(tb testing.TB, target string, oneWay time.Duration) *delayProxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &delayProxy{ln: ln, target: target, oneWay: oneWay}
	p.wg.Add(1)
	go p.accept()
	tb.Cleanup(p.close)
	return p
}

func (p *delayProxy) Addr() string { return p.ln.Addr().String() }

func (p *delayProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(u, c)
		go p.pipe(c, u)
	}
}

type delayedChunk struct {
	data []byte
	due  time.Time
}

// pipe copies src to dst, each chunk oneWay after it was read.
func (p *delayProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	ch := make(chan delayedChunk, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for c := range ch {
			if d := time.Until(c.due); d > 0 {
				time.Sleep(d)
			}
			if _, err := dst.Write(c.data); err != nil {
				for range ch {
				}
				return
			}
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			ch <- delayedChunk{data: append([]byte(nil), buf[:n]...), due: time.Now().Add(p.oneWay)}
		}
		if err != nil {
			break
		}
	}
	close(ch)
	<-done
	// One side is gone: end both, as a dropped connection would.
	_ = dst.Close()
	_ = src.Close()
}

func (p *delayProxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
