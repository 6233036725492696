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
	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/pkg/fieldcheck"
)

// CampaignJitter is the largest fraction of RetryPeriod added at random to
// each wait between two acquisition attempts, so that standbys started
// together do not hit Redis in lockstep.
const CampaignJitter = 0.2

// LeaseDriftFactor is the fraction of LeaseDuration by which the Elector
// assumes the lease may expire early in Redis because clocks run at
// slightly different rates (redsync's own default). A leader never leads
// past the start of its last successful acquisition or renewal plus
// LeaseDuration less this fraction of it.
const LeaseDriftFactor = 0.01

// ElectorConfig configures an Elector. The durations follow client-go's
// leader election: LeaseDuration > RenewDeadline > RetryPeriod > 0.
type ElectorConfig struct {
	// Client is the Redis holding the lease.
	Client redis.UniversalClient
	// Quorum, when set, are independent Redis masters that hold the lease
	// instead of Client (which may then be nil): it is taken, renewed and
	// read on a majority of them (redsync's Redlock), so a leader keeps
	// leading while a minority is down, and nobody leads while a majority
	// is.
	Quorum []redis.UniversalClient
	// Name is the lease's Redis key, e.g. "tokenkeeper:leader".
	Name string
	// Identity names this replica (e.g. hostname-pid); Leader reports it.
	Identity string
	// LeaseDuration is how long the lease lives in Redis without renewal:
	// the longest a standby waits after the leader crashed.
	LeaseDuration time.Duration
	// RenewDeadline is how long one renewal round may last: a round starts
	// RetryPeriod after the last successful acquisition or renewal
	// returned, and if none of its attempts succeeds within RenewDeadline
	// the leader stops leading. The leader also stops, whatever the round,
	// before its lease can expire in Redis (see LeaseDriftFactor).
	RenewDeadline time.Duration
	// RetryPeriod is the wait after a successful acquisition or renewal
	// before the next renewal round, the period of the attempts within a
	// round, and the wait between acquisition attempts (plus up to
	// CampaignJitter of it at random).
	RetryPeriod time.Duration
	Callbacks   LeaderCallbacks
	// Logger receives state changes and Redis failures; nil discards them.
	Logger *slog.Logger
	// Clock is the Elector's source of time for its schedule; nil is the
	// wall clock. Tests inject a fake one. Redis's own timeouts (and the
	// lease's expiry in Redis) always run on real time.
	Clock Clock
}

// Clock is the time source of an Elector.
type Clock interface {
	Now() time.Time
	// NewTimer returns a timer that fires once, d from now.
	NewTimer(d time.Duration) Timer
}

// Timer is a Clock's one-shot timer.
type Timer interface {
	// C is where the timer sends the time when it fires.
	C() <-chan time.Time
	// Stop prevents the timer from firing; it reports whether it did.
	Stop() bool
}

type wallClock struct{}

func (wallClock) Now() time.Time                 { return time.Now() }
func (wallClock) NewTimer(d time.Duration) Timer { return wallTimer{time.NewTimer(d)} }

type wallTimer struct{ t *time.Timer }

func (w wallTimer) C() <-chan time.Time { return w.t.C }
func (w wallTimer) Stop() bool          { return w.t.Stop() }

// LeaderCallbacks are called from the Elector's own goroutines, never while
// it waits on Redis. All are optional.
type LeaderCallbacks struct {
	// OnIsLeaderChange is called by Run itself, synchronously, right after
	// IsLeader changes, with the new value: true before OnStartedLeading
	// is started, false before the leading ctx is cancelled and before
	// anything else of the step-down (so before the lease is released and
	// another replica can lead). Use it for state that must never claim
	// the lead longer than IsLeader does, such as a leader gauge. It must
	// return at once: it holds up the step-down.
	OnIsLeaderChange func(leading bool)
	// OnStartedLeading runs in its own goroutine when this replica gains
	// the lead. ctx is cancelled the moment the lead is lost (renewal
	// refused, or no renewal within the deadline) or Run's context is
	// done. It must return soon after ctx is cancelled: the Elector
	// releases the lease only once it has returned, and waits for it
	// before campaigning again (see Run).
	OnStartedLeading func(ctx context.Context)
	// OnStoppedLeading is called after IsLeader turned false, the leading
	// ctx was cancelled and OnStartedLeading returned (or RenewDeadline
	// passed without it returning), before the lease is released.
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
	cfg    ElectorConfig
	clock  Clock
	store  leaseStore
	log    *slog.Logger
	jitter func() float64 // in [0, 1): the random part of campaign waits

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
	clock := cfg.Clock
	if clock == nil {
		clock = wallClock{}
	}
	return &Elector{
		cfg:    cfg,
		clock:  clock,
		store:  &redsyncLease{rs: redsync.New(pools(cfg.leaseClients())...), cfg: &cfg},
		log:    log.With("lease", cfg.Name, "identity", cfg.Identity),
		jitter: mathrand.Float64,
	}, nil
}

func (c *ElectorConfig) validate() error {
	err := c.Validate()
	if c.Client == nil && len(c.Quorum) == 0 {
		err = errors.Join(err, errors.New("lock: ElectorConfig.Client is nil: the lease needs a Redis client"))
	}
	for i, q := range c.Quorum {
		if q == nil {
			err = errors.Join(err, fmt.Errorf("lock: ElectorConfig.Quorum[%d] is nil", i))
		}
	}
	return err
}

// leaseClients are the clients the lease lives on.
func (c *ElectorConfig) leaseClients() []redis.UniversalClient {
	if len(c.Quorum) > 0 {
		return c.Quorum
	}
	return []redis.UniversalClient{c.Client}
}

// Validate reports every rule of the lease's settings that c breaks, as a
// *fieldcheck.Error naming fields by their Go names (the Client is checked
// by NewElector); nil if none.
func (c ElectorConfig) Validate() error {
	var l fieldcheck.List
	if c.Name == "" {
		l.Add("Name", "must not be empty: it is the lease's Redis key")
	}
	if c.Identity == "" {
		l.Add("Identity", "must not be empty: replicas must be told apart (e.g. hostname-pid)")
	}
	if c.RetryPeriod <= 0 {
		l.Add("RetryPeriod", "%v: must be positive", c.RetryPeriod)
	}
	if c.RenewDeadline <= c.RetryPeriod {
		l.Add("RenewDeadline", "%v must be greater than {{RetryPeriod}} %v, or a failed renewal could never be retried before giving up the lead", c.RenewDeadline, c.RetryPeriod)
	}
	if c.LeaseDuration <= c.RenewDeadline {
		l.Add("LeaseDuration", "%v must be greater than {{RenewDeadline}} %v, so a leader that cannot renew stops before its lease can pass to another replica", c.LeaseDuration, c.RenewDeadline)
	}
	return l.Err("lock: invalid ElectorConfig")
}

// IsLeader reports whether this replica leads now. It turns false before
// the leading ctx is cancelled, so whoever sees that ctx done also sees
// IsLeader false.
func (e *Elector) IsLeader() bool { return e.isLeader.Load() }

// Transitions is how many times this Elector gained the lead.
func (e *Elector) Transitions() int64 { return e.transitions.Load() }

// Leader returns the identity of the current holder as stored in Redis, or
// "" if nobody holds the lease. On a Quorum it is the value a majority
// holds, "" if none does, and an error if no majority answered.
func (e *Elector) Leader(ctx context.Context) (string, error) {
	clients := e.cfg.leaseClients()
	type answer struct {
		value string
		err   error
	}
	answers := make(chan answer, len(clients))
	for _, c := range clients {
		go func() {
			v, err := c.Get(ctx, e.cfg.Name).Result()
			if errors.Is(err, redis.Nil) {
				v, err = "", nil
			}
			answers <- answer{v, err}
		}()
	}
	majority := len(clients)/2 + 1
	held := map[string]int{}
	answered := 0
	var errs []error
	for range clients {
		a := <-answers
		if a.err != nil {
			errs = append(errs, a.err)
			continue
		}
		answered++
		if held[a.value]++; held[a.value] >= majority && a.value != "" {
			return identityOf(a.value), nil
		}
	}
	if answered < majority && len(clients) == 1 {
		return "", fmt.Errorf("lock: read leader of lease %q: %w", e.cfg.Name, errs[0])
	}
	if answered < majority {
		return "", fmt.Errorf("lock: read leader of lease %q: %d of %d Redis masters answered, %d needed: %w", e.cfg.Name, answered, len(clients), majority, errors.Join(errs...))
	}
	return "", nil
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
// losing it, and returns when ctx is done. If it leads then, it steps down
// as after a lost lead and releases the lease, so a standby takes over
// without waiting for expiry. It returns nil, or the error that kept it
// from releasing the lease (which then expires on its own within
// LeaseDuration). Run never has two OnStartedLeading calls running at
// once: after a lost lead it campaigns again only once OnStartedLeading
// returned. When ctx is done it waits at most RenewDeadline for
// OnStartedLeading, then for the release, whose context has a timeout of
// RenewDeadline (go-redis enforces it only with ContextTimeoutEnabled;
// otherwise its own read and write timeouts bound the call). Run may not
// be called twice at the same time.
func (e *Elector) Run(ctx context.Context) error {
	if !e.running.CompareAndSwap(false, true) {
		return fmt.Errorf("lock: Elector.Run for lease %q is already running", e.cfg.Name)
	}
	defer e.running.Store(false)
	notifier := startNotifier(e.cfg.Callbacks.OnNewLeader)
	defer notifier.stop()

	for {
		won, ok := e.campaign(ctx, notifier)
		if !ok {
			return nil
		}
		if err := e.lead(ctx, won, notifier); ctx.Err() != nil {
			return err
		}
	}
}

// acquisition is a won campaign: the lease value and when the winning
// attempt started and returned.
type acquisition struct {
	value      string
	start, end time.Time
}

// campaign tries to take the lease at once, then every RetryPeriod (plus
// jitter) until it succeeds or ctx is done.
func (e *Elector) campaign(ctx context.Context, notifier *leaderNotifier) (acquisition, bool) {
	redisFailing := false
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			wait := e.clock.NewTimer(e.cfg.RetryPeriod + time.Duration(e.jitter()*CampaignJitter*float64(e.cfg.RetryPeriod)))
			select {
			case <-ctx.Done():
				wait.Stop()
				return acquisition{}, false
			case <-wait.C():
			}
		}
		if ctx.Err() != nil {
			return acquisition{}, false
		}
		value, err := e.newValue()
		if err != nil {
			e.log.Error("lock: cannot campaign for the lead", "err", err)
			continue
		}
		start := e.clock.Now()
		err = e.store.acquire(ctx, value)
		end := e.clock.Now()
		if err == nil {
			if redisFailing {
				e.log.Info("lock: Redis reachable again")
			}
			return acquisition{value: value, start: start, end: end}, true
		}
		if ctx.Err() != nil {
			return acquisition{}, false
		}
		if errors.Is(err, ErrNotAcquired) {
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
	}
}

func (e *Elector) observeLeader(ctx context.Context, notifier *leaderNotifier) {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.RetryPeriod)
	defer cancel()
	if id, err := e.Leader(ctx); err == nil {
		notifier.observe(id)
	}
}

// renewPlan is the renew schedule of one term, in the Elector's clock. It
// is client-go's (a round of attempts every RetryPeriod, RenewDeadline
// long, RetryPeriod after the last success returned), with one addition:
// the deadline never passes the lease's own validity.
type renewPlan struct {
	lease, renew, retry time.Duration

	// validUntil is the earliest the lease can expire in Redis: the start
	// of the last successful acquisition or renewal (Redis applied the
	// expiry after it) plus LeaseDuration, less the drift allowance.
	validUntil time.Time
	// deadline ends the term unless a renewal succeeds before it.
	deadline time.Time
	// nextTry is when the next attempt may start.
	nextTry time.Time
}

func newRenewPlan(cfg *ElectorConfig, won acquisition) *renewPlan {
	p := &renewPlan{lease: cfg.LeaseDuration, renew: cfg.RenewDeadline, retry: cfg.RetryPeriod}
	p.succeeded(won.start, won.end)
	return p
}

// succeeded starts the next round after a successful acquisition or
// renewal that started at start and returned at end.
func (p *renewPlan) succeeded(start, end time.Time) {
	p.validUntil = start.Add(p.lease - time.Duration(LeaseDriftFactor*float64(p.lease)))
	roundStart := end.Add(p.retry)
	p.nextTry = roundStart
	p.deadline = roundStart.Add(p.renew)
	if p.validUntil.Before(p.deadline) {
		p.deadline = p.validUntil
	}
}

// failed schedules the next attempt of the round after one that started
// at start and returned at end: RetryPeriod after the failed one started,
// or at once if it took longer than that.
func (p *renewPlan) failed(start, end time.Time) {
	p.nextTry = start.Add(p.retry)
	if end.After(p.nextTry) {
		p.nextTry = end
	}
}

// Reasons for stepping down, as logged.
const (
	whyShutdown = "shutting down"
	whyDeadline = "no successful renewal within the renew deadline"
	whyLost     = "lease lost: expired or taken by another holder"
)

// lead runs one term: it renews the lease on the renewPlan until the lease
// is lost, the plan's deadline passes, or ctx is done; then it steps down.
// It returns the error from releasing the lease.
func (e *Elector) lead(ctx context.Context, won acquisition, notifier *leaderNotifier) error {
	// The leading ctx is cancelled by stepDown only, also on shutdown:
	// IsLeader must be false before it is done.
	leadCtx, stopLeading := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLeading()
	e.transitions.Add(1)
	e.setLeader(true)
	e.log.Info("lock: started leading")
	notifier.observe(e.cfg.Identity)
	callbackDone := make(chan struct{})
	go func() {
		defer close(callbackDone)
		if f := e.cfg.Callbacks.OnStartedLeading; f != nil {
			f(leadCtx)
		}
	}()

	// Each renewal runs in the background (see leaseStore.extend) so that
	// a Redis call stuck past its context (go-redis only honours read
	// timeouts by default) cannot delay stepping down at the deadline.
	plan := newRenewPlan(&e.cfg, won)
	var (
		inFlight      <-chan error
		attemptStart  time.Time
		cancelAttempt context.CancelFunc = func() {}
		why           string
	)
	for why == "" {
		now := e.clock.Now()
		if !now.Before(plan.deadline) {
			why = whyDeadline
			break
		}
		if inFlight == nil && !now.Before(plan.nextTry) {
			var actx context.Context
			actx, cancelAttempt = context.WithCancel(ctx)
			attemptStart = now
			inFlight = e.store.extend(actx, won.value)
		}
		wake := plan.deadline
		if inFlight == nil && plan.nextTry.Before(wake) {
			wake = plan.nextTry
		}
		timer := e.clock.NewTimer(wake.Sub(now))
		select {
		case <-ctx.Done():
			why = whyShutdown
		case <-timer.C():
		case err := <-inFlight:
			end := e.clock.Now()
			inFlight = nil
			cancelAttempt()
			switch {
			case !end.Before(plan.deadline):
				// Too late to count, whatever it says.
				why = whyDeadline
			case err == nil:
				plan.succeeded(attemptStart, end)
			case errors.Is(err, errLeaseLost):
				why = whyLost
			default:
				plan.failed(attemptStart, end)
				e.log.Warn("lock: lease renewal failed; retrying until the renew deadline",
					"err", err, "deadline", plan.deadline, "next_try", plan.nextTry)
			}
		}
		timer.Stop()
	}
	// An attempt still in flight is abandoned: if it lands after the
	// release it finds the value gone and does nothing (redsync's touch
	// script compares the value).
	cancelAttempt()
	return e.stepDown(ctx, won.value, why, stopLeading, callbackDone)
}

func (e *Elector) setLeader(leading bool) {
	e.isLeader.Store(leading)
	if f := e.cfg.Callbacks.OnIsLeaderChange; f != nil {
		f(leading)
	}
}

// stepDown ends a term, in this order: IsLeader turns false (and
// OnIsLeaderChange is told), the leading ctx is cancelled, OnStartedLeading
// is given up to RenewDeadline to return, OnStoppedLeading is called, and
// the lease is released, unless it was lost (nothing to release) or
// OnStartedLeading is still running (the lease then expires on its own, so
// no successor starts while this term's work may still run).
func (e *Elector) stepDown(ctx context.Context, value, why string, stopLeading context.CancelFunc, callbackDone <-chan struct{}) error {
	e.setLeader(false)
	stopLeading()
	level := slog.LevelWarn
	if why == whyShutdown {
		level = slog.LevelInfo
	}
	e.log.Log(ctx, level, "lock: stopped leading", "why", why)

	bound := e.clock.NewTimer(e.cfg.RenewDeadline)
	returned := true
	select {
	case <-callbackDone:
	case <-bound.C():
		returned = false
	}
	bound.Stop()
	if f := e.cfg.Callbacks.OnStoppedLeading; f != nil {
		f()
	}
	if !returned {
		e.log.Error("lock: OnStartedLeading has not returned within RenewDeadline of its ctx being cancelled; not releasing the lease, it expires on its own",
			"renew_deadline", e.cfg.RenewDeadline, "lease_duration", e.cfg.LeaseDuration)
		// Never two terms' work at once: campaign again only after it.
		select {
		case <-callbackDone:
		case <-ctx.Done():
			return fmt.Errorf("lock: lease %q not released: OnStartedLeading had not returned %v after its ctx was cancelled (the lease expires on its own within %v)",
				e.cfg.Name, e.cfg.RenewDeadline, e.cfg.LeaseDuration)
		}
		return nil
	}
	if why == whyLost {
		return nil
	}
	err := e.store.release(context.WithoutCancel(ctx), value)
	if err != nil && ctx.Err() == nil {
		e.log.Debug("lock: could not release the lease after stepping down", "err", err)
	}
	return err
}

// errLeaseLost is what leaseStore.extend returns when the key no longer
// holds our value (it expired, or another holder took it).
var errLeaseLost = errors.New("lock: lease lost")

// leaseStore is the Elector's view of the lease in Redis. Tests replace it
// with a scripted one driven by a fake Clock.
type leaseStore interface {
	// acquire makes one attempt to set the lease to value. It returns nil
	// if it did, an error wrapping ErrNotAcquired if another value holds
	// it, and another error if Redis could not be asked.
	acquire(ctx context.Context, value string) error
	// extend resets the lease's expiry if it still holds value. It
	// returns at once; the result (nil, an error wrapping errLeaseLost, or
	// another error) arrives later on the returned channel, which is
	// buffered: nobody has to receive it.
	extend(ctx context.Context, value string) <-chan error
	// release deletes the lease if it still holds value.
	release(ctx context.Context, value string) error
}

// redsyncLease is the leaseStore on Redis, through redsync.
type redsyncLease struct {
	rs  *redsync.Redsync
	cfg *ElectorConfig
}

func (l *redsyncLease) acquire(ctx context.Context, value string) error {
	m := l.rs.NewMutex(l.cfg.Name,
		redsync.WithExpiry(l.cfg.LeaseDuration),
		redsync.WithTries(1),
		redsync.WithGenValueFunc(func() (string, error) { return value, nil }),
		// redsync bounds each attempt to this fraction of the expiry;
		// its 5% default is too tight for short leases.
		redsync.WithTimeoutFactor(float64(l.cfg.RetryPeriod)/float64(l.cfg.LeaseDuration)),
	)
	if err := m.TryLockContext(ctx); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("lock: acquire %q: %w", l.cfg.Name, ctx.Err())
		}
		return classify(l.cfg.Name, err)
	}
	return nil
}

func (l *redsyncLease) extend(ctx context.Context, value string) <-chan error {
	result := make(chan error, 1)
	go func() {
		m := l.rs.NewMutex(l.cfg.Name, redsync.WithExpiry(l.cfg.LeaseDuration), redsync.WithValue(value))
		ok, err := m.ExtendContext(ctx)
		switch {
		case ok:
			result <- nil
		case lost(err):
			result <- fmt.Errorf("lock: extend %q: %w (%w)", l.cfg.Name, errLeaseLost, err)
		case err == nil:
			result <- fmt.Errorf("lock: extend %q: no quorum", l.cfg.Name)
		default:
			result <- fmt.Errorf("lock: extend %q: %w", l.cfg.Name, err)
		}
	}()
	return result
}

// lost tells a refused extension (our value is no longer under the key)
// from a failure to ask Redis.
func lost(err error) bool {
	var taken *redsync.ErrTaken
	var nodeTaken *redsync.ErrNodeTaken
	return errors.As(err, &taken) || errors.As(err, &nodeTaken)
}

// release gets its own timeout because it runs when ctx may already be
// done.
func (l *redsyncLease) release(ctx context.Context, value string) error {
	rctx, cancel := context.WithTimeout(ctx, l.cfg.RenewDeadline)
	defer cancel()
	m := l.rs.NewMutex(l.cfg.Name, redsync.WithValue(value))
	ok, err := m.UnlockContext(rctx)
	if ok || errors.Is(err, redsync.ErrLockAlreadyExpired) || lost(err) {
		return nil
	}
	if err == nil {
		err = errors.New("no quorum")
	}
	return fmt.Errorf("lock: release lease %q (it expires on its own within %v): %w", l.cfg.Name, l.cfg.LeaseDuration, err)
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
