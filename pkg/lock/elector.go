package lock

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	mathrand "math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-redsync/redsync/v4"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/redis/go-redis/v9"
)

// CampaignJitter is the largest fraction of RetryPeriod added at random to
// each wait between two acquisition attempts, so that standbys started
// together do not hit Redis in lockstep.
const CampaignJitter = 0.2

// ElectorConfig configures an Elector. The durations follow client-go's
// leader election: LeaseDuration > RenewDeadline > RetryPeriod > 0.
type ElectorConfig struct {
	// Client is the Redis holding the lease.
	Client redis.UniversalClient
	// Name is the lease's Redis key, e.g. "tokenkeeper:leader".
	Name string
	// Identity names this replica (e.g. hostname-pid); Leader reports it.
	Identity string
	// LeaseDuration is how long the lease lives in Redis without renewal:
	// the longest a standby waits after the leader crashed.
	LeaseDuration time.Duration
	// RenewDeadline is how long the leader keeps trying to renew, counted
	// from the start of its last successful renewal, before it stops
	// leading. It is shorter than LeaseDuration so that a leader cut off
	// from Redis stops before its lease can pass to someone else.
	RenewDeadline time.Duration
	// RetryPeriod is the wait between renewals, and between acquisition
	// attempts (plus up to CampaignJitter of it at random).
	RetryPeriod time.Duration
	Callbacks   LeaderCallbacks
	// Logger receives state changes and Redis failures; nil discards them.
	Logger *slog.Logger
}

// LeaderCallbacks are called from the Elector's own goroutines, never while
// it waits on Redis. All are optional.
type LeaderCallbacks struct {
	// OnStartedLeading runs in its own goroutine when this replica gains
	// the lead. ctx is cancelled the moment the lead is lost (renewal
	// refused or RenewDeadline passed) or Run's context is done. It must
	// return soon after ctx is cancelled: the Elector waits for it before
	// campaigning again and before Run returns.
	OnStartedLeading func(ctx context.Context)
	// OnStoppedLeading is called after the leading ctx was cancelled and
	// IsLeader turned false.
	OnStoppedLeading func()
	// OnNewLeader is called, in order and from one goroutine, when the
	// observed holder changes (this replica included). Intermediate values
	// may be skipped if the callback is slow; it is never called with "".
	OnNewLeader func(identity string)
}

// Elector takes part in a leader election through a Redis lease (a redsync
// mutex that the leader keeps extending). The value stored under Name is
// Identity + "/" + a random suffix of base64url characters, so Leader can
// recover the holder's identity while each term still has a unique value.
type Elector struct {
	cfg ElectorConfig
	rs  *redsync.Redsync
	log *slog.Logger

	running     atomic.Bool
	isLeader    atomic.Bool
	transitions atomic.Int64
}

// NewElector validates cfg and returns an Elector. Nothing touches Redis
// until Run.
func NewElector(cfg ElectorConfig) (*Elector, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Elector{
		cfg: cfg,
		rs:  redsync.New(goredis.NewPool(cfg.Client)),
		log: log.With("lease", cfg.Name, "identity", cfg.Identity),
	}, nil
}

func (c *ElectorConfig) validate() error {
	var errs []error
	if c.Client == nil {
		errs = append(errs, errors.New("lock: ElectorConfig.Client is nil: the lease needs a Redis client"))
	}
	if c.Name == "" {
		errs = append(errs, errors.New("lock: ElectorConfig.Name is empty: it is the lease's Redis key"))
	}
	if c.Identity == "" {
		errs = append(errs, errors.New("lock: ElectorConfig.Identity is empty: replicas must be told apart (e.g. hostname-pid)"))
	}
	if c.RetryPeriod <= 0 {
		errs = append(errs, fmt.Errorf("lock: ElectorConfig.RetryPeriod is %v: it must be positive", c.RetryPeriod))
	}
	if c.RenewDeadline <= c.RetryPeriod {
		errs = append(errs, fmt.Errorf("lock: ElectorConfig.RenewDeadline (%v) must be greater than RetryPeriod (%v), or a failed renewal could never be retried before giving up the lead", c.RenewDeadline, c.RetryPeriod))
	}
	if c.LeaseDuration <= c.RenewDeadline {
		errs = append(errs, fmt.Errorf("lock: ElectorConfig.LeaseDuration (%v) must be greater than RenewDeadline (%v), so a leader that cannot renew stops before its lease can pass to another replica", c.LeaseDuration, c.RenewDeadline))
	}
	return errors.Join(errs...)
}

// IsLeader reports whether this replica leads now. It turns false just
// before the leading ctx is cancelled, so whoever sees that ctx done also
// sees IsLeader false.
func (e *Elector) IsLeader() bool { return e.isLeader.Load() }

// Transitions is how many times this Elector gained the lead.
func (e *Elector) Transitions() int64 { return e.transitions.Load() }

// Leader returns the identity of the current holder as stored in Redis, or
// "" if nobody holds the lease.
func (e *Elector) Leader(ctx context.Context) (string, error) {
	v, err := e.cfg.Client.Get(ctx, e.cfg.Name).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("lock: read leader of lease %q: %w", e.cfg.Name, err)
	}
	return identityOf(v), nil
}

// identityOf strips the random suffix from a lease value. Identities may
// contain "/", the suffix never does.
func identityOf(value string) string {
	if i := strings.LastIndexByte(value, '/'); i >= 0 {
		return value[:i]
	}
	return value
}

func (e *Elector) newValue() (string, error) {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("lock: random lease value: %w", err)
	}
	return e.cfg.Identity + "/" + base64.RawURLEncoding.EncodeToString(b), nil
}

// Run campaigns for the lead, leads while it can, campaigns again after
// losing it, and returns when ctx is done. If it leads then, it cancels the
// leading ctx, releases the lease at once (so a standby takes over without
// waiting for expiry) and waits for OnStartedLeading to return. It returns
// nil, or the error that kept it from releasing the lease (which then
// expires on its own within LeaseDuration). Run may not be called twice at
// the same time.
func (e *Elector) Run(ctx context.Context) error {
	if !e.running.CompareAndSwap(false, true) {
		return fmt.Errorf("lock: Elector.Run for lease %q is already running", e.cfg.Name)
	}
	defer e.running.Store(false)
	notifier := startNotifier(e.cfg.Callbacks.OnNewLeader)
	defer notifier.stop()

	for {
		m, acquiredAt := e.campaign(ctx, notifier)
		if m == nil {
			return nil
		}
		if err := e.lead(ctx, m, acquiredAt, notifier); ctx.Err() != nil {
			return err
		}
	}
}

// campaign tries to take the lease every RetryPeriod (plus jitter) until it
// succeeds, returning the held mutex and when the winning attempt started,
// or nil once ctx is done.
func (e *Elector) campaign(ctx context.Context, notifier *leaderNotifier) (*redsync.Mutex, time.Time) {
	wait := time.NewTimer(0)
	defer wait.Stop()
	redisFailing := false
	for {
		select {
		case <-ctx.Done():
			return nil, time.Time{}
		case <-wait.C:
		}
		start := time.Now()
		m := e.rs.NewMutex(e.cfg.Name,
			redsync.WithExpiry(e.cfg.LeaseDuration),
			redsync.WithTries(1),
			redsync.WithGenValueFunc(e.newValue),
			// redsync bounds each attempt to this fraction of the expiry;
			// its 5% default is too tight for short leases.
			redsync.WithTimeoutFactor(float64(e.cfg.RetryPeriod)/float64(e.cfg.LeaseDuration)),
		)
		err := m.TryLockContext(ctx)
		if err == nil {
			if redisFailing {
				e.log.Info("lock: Redis reachable again")
			}
			return m, start
		}
		if ctx.Err() != nil {
			return nil, time.Time{}
		}
		if errors.Is(classify(e.cfg.Name, err), ErrNotAcquired) {
			if redisFailing {
				e.log.Info("lock: Redis reachable again")
				redisFailing = false
			}
			if notifier != nil {
				e.observeLeader(ctx, notifier)
			}
		} else if !redisFailing {
			e.log.Warn("lock: cannot campaign for the lead", "err", err)
			redisFailing = true
		}
		wait.Reset(e.cfg.RetryPeriod + time.Duration(mathrand.Float64()*CampaignJitter*float64(e.cfg.RetryPeriod)))
	}
}

func (e *Elector) observeLeader(ctx context.Context, notifier *leaderNotifier) {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.RetryPeriod)
	defer cancel()
	if id, err := e.Leader(ctx); err == nil {
		notifier.observe(id)
	}
}

type renewal struct {
	start time.Time
	ok    bool
	err   error
}

// lead runs one term: it keeps extending m every RetryPeriod until the
// lease is lost, RenewDeadline passes without a successful renewal, or ctx
// is done; then it steps down. It returns the error from releasing the
// lease.
func (e *Elector) lead(ctx context.Context, m *redsync.Mutex, renewedAt time.Time, notifier *leaderNotifier) error {
	value := m.Value()
	leadCtx, stopLeading := context.WithCancel(ctx)
	defer stopLeading()
	e.isLeader.Store(true)
	e.transitions.Add(1)
	e.log.Info("lock: started leading")
	notifier.observe(e.cfg.Identity)
	callbackDone := make(chan struct{})
	go func() {
		defer close(callbackDone)
		if f := e.cfg.Callbacks.OnStartedLeading; f != nil {
			f(leadCtx)
		}
	}()

	// Each renewal runs in its own goroutine so that a Redis call stuck
	// past its context (go-redis only honours read timeouts by default)
	// cannot delay stepping down at the deadline.
	results := make(chan renewal, 1)
	inFlight := false
	retry := time.NewTimer(e.cfg.RetryPeriod)
	defer retry.Stop()
	deadline := time.NewTimer(time.Until(renewedAt.Add(e.cfg.RenewDeadline)))
	defer deadline.Stop()
	var why string
loop:
	for {
		select {
		case <-ctx.Done():
			why = "shutting down"
			break loop
		case <-deadline.C:
			why = "no successful renewal within RenewDeadline"
			break loop
		case <-retry.C:
			inFlight = true
			go func(start, giveUp time.Time) {
				actx, cancel := context.WithDeadline(ctx, giveUp)
				defer cancel()
				ok, err := m.ExtendContext(actx)
				results <- renewal{start: start, ok: ok, err: err}
			}(time.Now(), renewedAt.Add(e.cfg.RenewDeadline))
		case r := <-results:
			inFlight = false
			if r.ok {
				renewedAt = r.start
				deadline.Reset(time.Until(renewedAt.Add(e.cfg.RenewDeadline)))
			} else if lost(r.err) {
				why = "lease lost: expired or taken by another holder"
				break loop
			} else {
				e.log.Warn("lock: lease renewal failed; retrying until the renew deadline",
					"err", r.err, "deadline", renewedAt.Add(e.cfg.RenewDeadline))
			}
			retry.Reset(e.cfg.RetryPeriod)
		}
	}

	// Step down. Leading work stops first: IsLeader is false by the time
	// anyone sees the leading ctx done. Nothing before the callbacks waits
	// on Redis.
	e.isLeader.Store(false)
	stopLeading()
	released := make(chan error, 1)
	go func() { released <- e.release(ctx, value) }()
	level := slog.LevelWarn
	if ctx.Err() != nil {
		level = slog.LevelInfo
	}
	e.log.Log(ctx, level, "lock: stopped leading", "why", why)
	if f := e.cfg.Callbacks.OnStoppedLeading; f != nil {
		f()
	}
	if inFlight {
		// An extension that lands after the release finds the value gone
		// and does nothing (redsync's touch script compares the value).
		<-results
	}
	<-callbackDone
	err := <-released
	if err != nil && ctx.Err() == nil {
		e.log.Debug("lock: could not release the lost lease", "err", err)
	}
	return err
}

// lost tells a refused extension (our value is no longer under the key)
// from a failure to ask Redis.
func lost(err error) bool {
	var taken *redsync.ErrTaken
	var nodeTaken *redsync.ErrNodeTaken
	return errors.As(err, &taken) || errors.As(err, &nodeTaken)
}

// release deletes the lease if it still holds value. It gets its own
// timeout because it runs when ctx may already be done.
func (e *Elector) release(ctx context.Context, value string) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.cfg.RenewDeadline)
	defer cancel()
	m := e.rs.NewMutex(e.cfg.Name, redsync.WithValue(value))
	ok, err := m.UnlockContext(rctx)
	if ok || errors.Is(err, redsync.ErrLockAlreadyExpired) || lost(err) {
		return nil
	}
	if err == nil {
		err = errors.New("no quorum")
	}
	return fmt.Errorf("lock: release lease %q (it expires on its own within %v): %w", e.cfg.Name, e.cfg.LeaseDuration, err)
}

// leaderNotifier delivers OnNewLeader calls in order from one goroutine,
// keeping only the latest pending value so the elector never waits for
// the callback.
type leaderNotifier struct {
	f      func(string)
	mu     sync.Mutex
	latest string
	wake   chan struct{}
	quit   chan struct{}
	exited chan struct{}
}

func startNotifier(f func(string)) *leaderNotifier {
	if f == nil {
		return nil
	}
	n := &leaderNotifier{f: f, wake: make(chan struct{}, 1), quit: make(chan struct{}), exited: make(chan struct{})}
	go n.loop()
	return n
}

func (n *leaderNotifier) observe(identity string) {
	if n == nil || identity == "" {
		return
	}
	n.mu.Lock()
	changed := identity != n.latest
	n.latest = identity
	n.mu.Unlock()
	if changed {
		select {
		case n.wake <- struct{}{}:
		default:
		}
	}
}

func (n *leaderNotifier) loop() {
	defer close(n.exited)
	delivered := ""
	for {
		select {
		case <-n.quit:
			return
		case <-n.wake:
		}
		n.mu.Lock()
		id := n.latest
		n.mu.Unlock()
		if id != delivered {
			delivered = id
			n.f(id)
		}
	}
}

func (n *leaderNotifier) stop() {
	if n == nil {
		return
	}
	close(n.quit)
	<-n.exited
}
