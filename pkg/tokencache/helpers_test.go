package tokencache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/internal/redistest"
	"github.com/tokenkeeper/tokenkeeper/internal/testlog"
	"github.com/tokenkeeper/tokenkeeper/internal/tktest"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// scriptedSource mints "tok-N" tokens and records every call. Errors queued
// in errs are returned first, one per call; block, if set, is waited on
// before answering.
type scriptedSource struct {
	mu        sync.Mutex
	calls     int
	expiresIn time.Duration
	errs      []error
	block     chan struct{}
	started   chan struct{} // receives once per call, if set
	prefix    string
	mode      wechat.Mode
	issuedAt  func(call int) time.Time // WeChat's Date for a call's reply; nil: none
}

func (s *scriptedSource) Fetch(ctx context.Context, appID string) (wechat.Token, error) {
	s.mu.Lock()
	s.calls++
	n := s.calls
	var err error
	if len(s.errs) > 0 {
		err, s.errs = s.errs[0], s.errs[1:]
	}
	block, started, issued := s.block, s.started, s.issuedAt
	s.mu.Unlock()

	if started != nil {
		started <- struct{}{}
	}
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return wechat.Token{}, ctx.Err()
		}
	}
	if err != nil {
		return wechat.Token{}, err
	}
	exp := s.expiresIn
	if exp == 0 {
		exp = 7200 * time.Second
	}
	tok := wechat.Token{Value: fmt.Sprintf("%stok-%d", s.prefix, n), ExpiresIn: exp}
	if issued != nil {
		tok.IssuedAt = issued(n)
	}
	return tok, nil
}

func (s *scriptedSource) Mode(string) wechat.Mode { return s.mode }

func (s *scriptedSource) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

func (s *scriptedSource) QueueErr(err ...error) {
	s.mu.Lock()
	s.errs = append(s.errs, err...)
	s.mu.Unlock()
}

// commandCounter counts the commands a go-redis client sends.
type commandCounter struct{ n atomic.Int64 }

func (c *commandCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *commandCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmd)
	}
}
func (c *commandCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

type fixture struct {
	b     *tktest.Backend
	cmds  *commandCounter
	m     *miniredis.Miniredis // nil on a real server
	clock *tktest.Clock        // moves miniredis's TTLs too
	src   *scriptedSource
	rdb   redis.UniversalClient
	admin redis.UniversalClient // the test's own client: not counted
	cache *Cache
}

var t0 = time.Date(2026, 11, 20, 4, 0, 0, 0, time.UTC) // noon in Beijing

// newFixture is a cache on a miniredis of its own.
func newFixture(t *testing.T, opts ...Option) *fixture {
	t.Helper()
	return newFixtureOn(t, tktest.Open(t, tktest.Miniredis), opts...)
}

// newFixtureOn is a cache on backend b, with the clock at t0 (miniredis's
// too).
func newFixtureOn(t *testing.T, b *tktest.Backend, opts ...Option) *fixture {
	t.Helper()
	if b.Mini != nil {
		b.Mini.SetTime(t0)
	}
	f := &fixture{b: b, m: b.Mini, clock: tktest.NewClock(t0, b.FastForward), src: &scriptedSource{}}
	f.rdb, f.admin = b.Client(), b.Client()
	f.cmds = &commandCounter{}
	f.rdb.AddHook(f.cmds)
	f.cache = f.newCache(t, opts...)
	return f
}

// newCache builds another process's cache on the same Redis, clock and
// source.
func (f *fixture) newCache(t *testing.T, opts ...Option) *Cache {
	t.Helper()
	base := []Option{WithClock(f.clock.Now), WithBackoff(time.Second, 8*time.Second)}
	c, err := New(f.rdb, f.src, append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// record is app's stored record and its key's TTL.
func (f *fixture) record(t *testing.T, app string) (Token, time.Duration) {
	t.Helper()
	ctx := context.Background()
	key := RecordKey("tokenkeeper:", app)
	s, err := f.admin.Get(ctx, key).Result()
	if err != nil {
		t.Fatalf("record %s: %v", key, err)
	}
	tok, err := DecodeRecord(key, s)
	if err != nil {
		t.Fatal(err)
	}
	ttl, err := f.admin.PTTL(ctx, key).Result()
	if err != nil {
		t.Fatalf("PTTL %s: %v", key, err)
	}
	return tok, ttl
}

// ttlIs says whether a TTL read by record is want: exactly on miniredis,
// whose TTLs move only with the test's clock; on a real server, whose TTLs
// run on the wall clock, what is left of want after the few ms between the
// write and the read.
func (f *fixture) ttlIs(got, want time.Duration) bool {
	if f.m != nil {
		return got == want
	}
	return got <= want && got > want-250*time.Millisecond
}

// stallFetch starts a passive refresh of bad by f.cache ("process A") and
// returns once A's upstream fetch is in flight and held there, as if A had
// been frozen mid-fetch. Fetches started afterwards are not held. release
// lets A finish and returns what its Invalidate returned.
func (f *fixture) stallFetch(app, bad string) (release func() error) {
	hold := make(chan struct{})
	f.src.mu.Lock()
	f.src.block = hold
	f.src.started = make(chan struct{}, 4)
	started := f.src.started
	f.src.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		_, err := f.cache.Invalidate(context.Background(), app, bad)
		done <- err
	}()
	<-started
	f.src.mu.Lock()
	f.src.block = nil
	f.src.mu.Unlock()
	return func() error {
		close(hold)
		return <-done
	}
}

func mustToken(t *testing.T, c *Cache, app string) Token {
	t.Helper()
	tok, err := c.Token(context.Background(), app)
	if err != nil {
		t.Fatalf("Token(%s): %v", app, err)
	}
	return tok
}

// waitFor waits for cond, checking after each signal from ch or every
// millisecond of a bounded budget: used only where the event is a
// background goroutine's effect on shared state that has no signal of its
// own.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

var errBoom = errors.New("boom")

func newTestLogger(w *testlog.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// cacheOnRealRedis is a cache on a real redis-server of its own, with a
// second client for the test to act on the server directly.
func cacheOnRealRedis(t *testing.T, src Source) (*Cache, *redis.Client) {
	t.Helper()
	srv := redistest.Start(t)
	rdb, admin := srv.Client(), srv.Client()
	t.Cleanup(func() { _ = rdb.Close(); _ = admin.Close() })
	c, err := New(rdb, src)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, admin
}
