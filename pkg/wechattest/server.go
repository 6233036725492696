package wechattest

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// Defaults match WeChat's documented behaviour.
const (
	DefaultLifetime   = 7200 * time.Second
	DefaultGrace      = 5 * time.Minute
	DefaultDailyQuota = 2000

	// StableForceDailyLimit and StableForceMinInterval bound force_refresh on
	// the stable-token endpoint.
	StableForceDailyLimit  = 20
	StableForceMinInterval = 30 * time.Second
)

type config struct {
	now        func() time.Time
	lifetime   time.Duration
	grace      time.Duration
	dailyQuota int
	apps       []appSecret
	tickets    ticketConfig
}

type appSecret struct{ appID, secret string }

func (c *config) validate() error {
	if c.now == nil {
		return fmt.Errorf("wechattest: WithClock(nil): the clock must be a function")
	}
	if c.lifetime <= 0 {
		return fmt.Errorf("wechattest: WithLifetime(%v): the lifetime must be positive", c.lifetime)
	}
	if c.grace < 0 {
		return fmt.Errorf("wechattest: WithGrace(%v): the grace period must not be negative", c.grace)
	}
	if c.dailyQuota < 0 {
		return fmt.Errorf("wechattest: WithDailyQuota(%d): the quota must not be negative", c.dailyQuota)
	}
	if err := c.tickets.validate(); err != nil {
		return err
	}
	for _, a := range c.apps {
		if a.appID == "" || a.secret == "" {
			return fmt.Errorf("wechattest: WithApp: appID and secret must both be non-empty (appID %q)", a.appID)
		}
	}
	return nil
}

// Option configures a Server.
type Option func(*config)

// WithClock drives every time-based rule (expiry, grace, quota day, the
// force_refresh interval) from now instead of time.Now, so tests move time
// without sleeping.
func WithClock(now func() time.Time) Option { return func(c *config) { c.now = now } }

// WithLifetime sets the life of every minted token (default 7200 s). The
// reply's expires_in is whole seconds, rounded up and at least 1; the
// fake itself expires the token after exactly d.
func WithLifetime(d time.Duration) Option { return func(c *config) { c.lifetime = d } }

// WithGrace sets how long a replaced token keeps working (default 5 min).
// It is also the length of a stable token's "last window" in which a
// normal call gets the next token.
func WithGrace(d time.Duration) Option { return func(c *config) { c.grace = d } }

// WithDailyQuota sets the classic endpoint's calls per app per Beijing day
// (default 2000).
func WithDailyQuota(n int) Option { return func(c *config) { c.dailyQuota = n } }

// WithApp registers an app at start.
func WithApp(appID, secret string) Option {
	return func(c *config) { c.apps = append(c.apps, appSecret{appID, secret}) }
}

// Server is a fake WeChat token server. All methods are safe for
// concurrent use.
type Server struct {
	cfg     config
	handler http.Handler
	ts      *httptest.Server // nil when built by NewHandler
	closing chan struct{}    // closed by Close: releases FaultLatency waits
	once    sync.Once

	mu           sync.Mutex
	apps         map[string]*appState
	tokens       map[string]*tokenRecord  // every token ever minted, by value
	tickets      map[string]*ticketRecord // every ticket ever minted, by value
	unattributed Stats                    // calls whose app is unknown
	faults       []*queuedFault
}

// New starts a fake on 127.0.0.1 and closes it when the test ends. A bad
// option fails the test.
func New(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	s, err := newServer(opts)
	if err != nil {
		tb.Fatal(err)
		return nil
	}
	if err := s.start(); err != nil {
		tb.Fatal(err)
		return nil
	}
	tb.Cleanup(s.Close)
	return s
}

// NewServer starts a fake on 127.0.0.1 outside a test (demo mode, tools).
// The caller must Close it. It panics on a bad option.
func NewServer(opts ...Option) *Server {
	s, err := newServer(opts)
	if err != nil {
		panic(err)
	}
	if err := s.start(); err != nil {
		panic(err)
	}
	return s
}

// NewHandler builds a fake without a listener, for mounting its Handler in
// another http.Server. URL returns "" and Close only releases pending
// FaultLatency waits. It panics on a bad option.
func NewHandler(opts ...Option) *Server {
	s, err := newServer(opts)
	if err != nil {
		panic(err)
	}
	return s
}

func newServer(opts []Option) (*Server, error) {
	cfg := config{now: time.Now, lifetime: DefaultLifetime, grace: DefaultGrace, dailyQuota: DefaultDailyQuota,
		tickets: ticketConfig{refetch: TicketReuse, lifetime: DefaultTicketLifetime, grace: DefaultTicketGrace}}
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:     cfg,
		closing: make(chan struct{}),
		apps:    make(map[string]*appState),
		tokens:  make(map[string]*tokenRecord),
		tickets: make(map[string]*ticketRecord),
	}
	for _, a := range cfg.apps {
		s.AddApp(a.appID, a.secret)
	}
	s.handler = s.routes()
	return s, nil
}

// start listens on 127.0.0.1 only: httptest.NewServer may fall back to
// [::1] or obey -httptest.serve, and the fake must never be reachable from
// elsewhere.
func (s *Server) start() error {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("wechattest: listen on 127.0.0.1: %w", err)
	}
	s.ts = &httptest.Server{Listener: l, Config: &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second}}
	s.ts.Start()
	return nil
}

// Handler returns the fake's HTTP handler (paths /cgi-bin/...), to mount
// it in another server.
func (s *Server) Handler() http.Handler { return s.handler }

// URL is the base URL, e.g. http://127.0.0.1:PORT; clients append
// /cgi-bin/token and so on.
func (s *Server) URL() string {
	if s.ts == nil {
		return ""
	}
	return s.ts.URL
}

// Close stops the server. Calls waiting in a FaultLatency are released
// first so Close never waits for them.
func (s *Server) Close() {
	s.once.Do(func() {
		close(s.closing)
		if s.ts != nil {
			s.ts.Close()
		}
	})
}

// AddApp registers an app, or changes the secret of a known one (its
// tokens stay valid, as when an operator resets an AppSecret on WeChat).
func (s *Server) AddApp(appID, secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.apps[appID]; ok {
		a.secret = secret
		return
	}
	s.apps[appID] = &appState{secret: secret}
}

// ResetQuota clears today's quota of appID, like POST /cgi-bin/clear_quota.
func (s *Server) ResetQuota(appID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.apps[appID]; ok {
		a.quotaUsed = 0
	}
}

func (s *Server) now() time.Time { return s.cfg.now() }
