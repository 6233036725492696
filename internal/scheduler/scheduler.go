package scheduler

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// Refresher makes sure an app has a token that is not due for refresh.
// A tokencache.Admin (cache.Admin()) is one. Refresh must return soon after ctx is done.
type Refresher interface {
	Refresh(ctx context.Context, appID string) (tokencache.Token, error)
}

// Peeker reads an app's record without ever fetching; tokencache.Admin is
// one. When the Refresher is also a Peeker, Changed re-reads a changed
// record with it; otherwise a change makes the app due at once (Refresh
// reads the record too, and fetches only if it is due).
type Peeker interface {
	Peek(ctx context.Context, appID string) (tok tokencache.Token, found bool, err error)
}

// BatchPeeker reads the records of many apps at once and never fetches;
// *tokencache.Cache is one (pipelined GETs). When the Refresher is also a
// BatchPeeker, Run starts by reading every app's record in batches and
// plans each app at its record's RefreshAt: a new leader taking over a
// warm Redis fetches nothing and costs a round trip per batch, not one
// Refresh per app.
type BatchPeeker interface {
	PeekMany(ctx context.Context, appIDs []string) []tokencache.Peeked
}

// Plan is what Run's first pass found (Config.OnPlanned).
type Plan struct {
	Apps        int           // apps planned (stopped ones are not)
	FromRecords int           // planned at their record's RefreshAt
	DueNow      int           // without a usable, not yet due record (or unreadable): refreshed at once
	Took        time.Duration // the pass's reads
}

// planChunk is how many apps one PeekMany call of the first pass reads,
// each call bounded by CallTimeout; planParallel calls run at once.
const (
	planChunk    = 2000
	planParallel = 4
)

// Defaults for the zero values in Config.
const (
	DefaultMaxJitter     = 5 * time.Second
	DefaultMaxConcurrent = 8
	DefaultCallTimeout   = 30 * time.Second
)

// Retry delays after failures.
const (
	BackoffBase = time.Second // first retry after a transient failure (before jitter)
	BackoffMax  = time.Minute // ceiling of the transient backoff
	// RedisRetryMax is the ceiling of the backoff when Redis, not WeChat,
	// failed (classes unavailable and stale). Found by the chaos run: with
	// the minute-long ceiling, refreshes due during a 3 s Redis outage were
	// retried after their tokens' usable end.
	RedisRetryMax    = 2 * time.Second
	MinuteLimitDelay = time.Minute     // after errcode 45011
	BudgetRetry      = 5 * time.Minute // while the daily fetch budget is used up
	// DefaultConfigRetry is how long an app whose fetch failed with a
	// configuration error (wrong secret, IP not whitelisted) waits before
	// it is tried again: an operator may fix it without telling us. A
	// reload retries it at once (RetryNow).
	DefaultConfigRetry = 10 * time.Minute
	// MinDelay is the shortest wait after a success or a hold, so a
	// Refresher that keeps returning tokens already due (or holds already
	// over) cannot make the scheduler spin.
	MinDelay = time.Second
)

// Outcome classes reported in Result.Class and AppStatus.LastClass.
const (
	ClassOK          = "ok"
	ClassHeld        = "held"
	ClassQuota       = "quota"
	ClassBudget      = "budget"
	ClassMinuteLimit = "minute_limit"
	ClassConfig      = "config"
	ClassUnavailable = "unavailable"
	ClassTransient   = "transient"
	// ClassStale: Refresh succeeded but returned a token already due for
	// refresh. tokencache does so while Redis is unreachable (it serves the
	// last good token from memory), so it is retried with the transient
	// backoff rather than every MinDelay.
	ClassStale = "stale"
)

// Config configures a Scheduler. Zero durations and counts take the
// defaults above.
type Config struct {
	// Apps are the appids to refresh; each at most once, none empty.
	Apps []string
	// Refresher does the work, normally the process's *tokencache.Cache.
	Refresher Refresher
	// Clock is the time source (default time.Now).
	Clock func() time.Time
	// Logger receives failures (WARN), configuration errors and exhausted
	// quotas (ERROR) and successes (DEBUG). Nil discards.
	Logger *slog.Logger
	// MaxJitter is the most added at random to each next run (default 5s);
	// after a success it is further clamped to a tenth of the token's
	// refresh window.
	MaxJitter time.Duration
	// MaxConcurrent bounds the Refresh calls running at once (default 8).
	MaxConcurrent int
	// CallTimeout bounds one Refresh call (default 30s).
	CallTimeout time.Duration
	// OnResult, if set, is called after every Refresh call from the
	// scheduler's goroutine; it must be fast and must not call Run.
	OnResult func(Result)
	// ConfigRetry is the wait after a configuration error (default
	// DefaultConfigRetry).
	ConfigRetry time.Duration
	// OnPlanned, if set, is called once per Run when every app is
	// scheduled, before the first Refresh is dispatched.
	OnPlanned func(Plan)
}

// Result is the outcome of one Refresh call.
type Result struct {
	AppID string
	Token tokencache.Token // zero on error
	Err   error
	Class string    // one of the Class constants
	Next  time.Time // when the app is due again; zero if it was stopped
}

// String describes the result with the token's fingerprint, never its
// value, so a Result printed by accident leaks nothing.
func (r Result) String() string {
	s := "scheduler.Result{app:" + r.AppID + " class:" + r.Class + " token:" + wechat.Fingerprint(r.Token.Value) +
		" version:" + strconv.FormatInt(r.Token.Version, 10) + " next:" + r.Next.Format(time.RFC3339)
	if r.Err != nil {
		s += " err:" + r.Err.Error()
	}
	return s + "}"
}

// Format makes every fmt verb, %#v included, go through String.
func (r Result) Format(f fmt.State, verb rune) { io.WriteString(f, r.String()) }

// LogValue logs the result with the token's fingerprint, never its value.
func (r Result) LogValue() slog.Value {
	attrs := []slog.Attr{
		slog.String("app", r.AppID), slog.String("class", r.Class),
		slog.String("token", wechat.Fingerprint(r.Token.Value)), slog.Int64("version", r.Token.Version),
		slog.Time("next", r.Next),
	}
	if r.Err != nil {
		attrs = append(attrs, slog.String("err", r.Err.Error()))
	}
	return slog.GroupValue(attrs...)
}

// AppStatus is one app's state as Snapshot reports it.
type AppStatus struct {
	AppID string
	// Next is when the app is next due; zero while a call runs, when the
	// app is stopped, and before the first Run.
	Next    time.Time
	Running bool
	// Stopped is true for an app SetApps removed while a call on it ran
	// (it is not refreshed again). A configuration error no longer stops
	// an app: it is retried every Config.ConfigRetry.
	Stopped bool
	// LastRun is when the last Refresh call ended; zero before the first.
	LastRun   time.Time
	LastClass string // "" before the first call
	LastErr   error
	// ConsecutiveFailures counts calls since the last success.
	ConsecutiveFailures int
	// TokenVersion and UsableUntil describe the token the last successful
	// call returned.
	TokenVersion int64
	UsableUntil  time.Time
}

// ErrRunning is returned by Run while another Run is active.
var ErrRunning = errors.New("scheduler: already running")

// Scheduler refreshes a fixed set of apps. Build it with New.
type Scheduler struct {
	refresher   Refresher
	peeker      Peeker      // nil if the Refresher is not one
	batch       BatchPeeker // nil if the Refresher is not one
	now         func() time.Time
	log         *slog.Logger
	maxJitter   time.Duration
	maxConc     int
	callTimeout time.Duration
	onResult    func(Result)
	configRetry time.Duration
	onPlanned   func(Plan)

	running atomic.Bool

	mu      sync.Mutex // guards entries' fields, the heap and pending
	entries []*entry   // in Config.Apps order, for Snapshot
	due     timerHeap
	// pending are the apps Changed reported, in order, each at most once,
	// to be re-read when a worker is free.
	pending []*entry

	byApp map[string]*entry // guarded by mu: SetApps changes it
	kick  chan struct{}     // one buffered wake-up: Changed queued an app

	// Test seams: the timer and a signal that the loop is idle (nothing
	// running) and about to sleep until the value sent (zero: no app due).
	newWaker func() waker
	idle     chan time.Time
	randN    func(n int64) int64
}

type entry struct {
	app         string
	next        time.Time
	index       int // in due; -1 when not queued
	running     bool
	stopped     bool
	failures    int
	lastRun     time.Time
	lastClass   string
	lastErr     error
	version     int64
	usableUntil time.Time
	// changed: a change of the record was reported and the record was not
	// read since (a Peek or a Refresh that ends after the report reads it
	// again). queued: in pending. peeking: a Peek runs.
	changed, queued, peeking bool
}

// New validates cfg and builds a Scheduler.
func New(cfg Config) (*Scheduler, error) {
	var errs []error
	if cfg.Refresher == nil {
		errs = append(errs, errors.New("Refresher: must not be nil"))
	}
	if len(cfg.Apps) == 0 {
		//lint:ignore ST1005 the message starts with the name of the Config field, like the others here
		errs = append(errs, errors.New("Apps: must name at least one app"))
	}
	seen := make(map[string]bool, len(cfg.Apps))
	for i, app := range cfg.Apps {
		switch {
		case app == "":
			//lint:ignore ST1005 the message starts with the name of the Config field, like the others here
			errs = append(errs, fmt.Errorf("Apps[%d]: empty appid", i))
		case seen[app]:
			//lint:ignore ST1005 the message starts with the name of the Config field, like the others here
			errs = append(errs, fmt.Errorf("Apps[%d]: appid %q listed twice", i, app))
		}
		seen[app] = true
	}
	if cfg.MaxJitter < 0 {
		errs = append(errs, fmt.Errorf("MaxJitter %v: must not be negative", cfg.MaxJitter))
	}
	if cfg.MaxConcurrent < 0 {
		errs = append(errs, fmt.Errorf("MaxConcurrent %d: must not be negative", cfg.MaxConcurrent))
	}
	if cfg.CallTimeout < 0 {
		errs = append(errs, fmt.Errorf("CallTimeout %v: must not be negative", cfg.CallTimeout))
	}
	if cfg.ConfigRetry < 0 {
		errs = append(errs, fmt.Errorf("ConfigRetry %v: must not be negative", cfg.ConfigRetry))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("scheduler: invalid config: %w", errors.Join(errs...))
	}
	s := &Scheduler{
		refresher:   cfg.Refresher,
		now:         cfg.Clock,
		log:         cfg.Logger,
		maxJitter:   cfg.MaxJitter,
		maxConc:     cfg.MaxConcurrent,
		callTimeout: cfg.CallTimeout,
		onResult:    cfg.OnResult,
		configRetry: cfg.ConfigRetry,
		onPlanned:   cfg.OnPlanned,
		kick:        make(chan struct{}, 1),
		newWaker:    func() waker { return &timerWaker{} },
		randN:       rand.Int64N,
	}
	s.peeker, _ = cfg.Refresher.(Peeker)
	s.batch, _ = cfg.Refresher.(BatchPeeker)
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.maxJitter == 0 {
		s.maxJitter = DefaultMaxJitter
	}
	if s.maxConc == 0 {
		s.maxConc = DefaultMaxConcurrent
	}
	if s.callTimeout == 0 {
		s.callTimeout = DefaultCallTimeout
	}
	if s.configRetry == 0 {
		s.configRetry = DefaultConfigRetry
	}
	s.entries = make([]*entry, len(cfg.Apps))
	s.byApp = make(map[string]*entry, len(cfg.Apps))
	for i, app := range cfg.Apps {
		s.entries[i] = &entry{app: app, index: -1}
		s.byApp[app] = s.entries[i]
	}
	s.due = make(timerHeap, 0, len(cfg.Apps))
	return s, nil
}

// job is a call for a worker: a Refresh, or a Peek of a changed record.
type job struct {
	e    *entry
	peek bool
}

// outcome travels from a worker back to the loop.
type outcome struct {
	e     *entry
	peek  bool
	tok   tokencache.Token
	found bool // of a Peek
	err   error
}

// Run refreshes apps until ctx is done, then waits for the Refresh calls
// under way (their context is cancelled too) and returns nil. When Run
// starts, a Refresher that is a BatchPeeker has every app's record read in
// batches, and each app is planned at its record's RefreshAt (plus jitter);
// apps without such a record, and every app of another Refresher, are due
// at once (a Refresh reads the record and fetches only if needed). The
// most urgent run first.
func (s *Scheduler) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer s.running.Store(false)

	s.mu.Lock()
	s.due = s.due[:0]
	s.pending = nil // every app is read at start anyway
	var apps []*entry
	for _, e := range s.entries {
		e.running, e.index = false, -1
		e.changed, e.queued, e.peeking = false, false, false
		if !e.stopped {
			apps = append(apps, e)
		}
	}
	s.mu.Unlock()
	plan := s.plan(ctx, apps)
	if ctx.Err() != nil {
		return nil
	}
	s.mu.Lock()
	for _, e := range apps {
		e.index = len(s.due)
		s.due = append(s.due, e)
	}
	heap.Init(&s.due)
	s.mu.Unlock()
	if plan.Took > 0 || plan.FromRecords > 0 {
		s.log.Info("scheduler: planned every app from its record", "apps", plan.Apps,
			"from_records", plan.FromRecords, "due_now", plan.DueNow, "took", plan.Took)
	}
	if s.onPlanned != nil {
		s.onPlanned(plan)
	}

	// Both channels hold maxConc: the loop never has more than maxConc
	// calls queued or running, so neither side ever blocks on a send.
	jobs := make(chan job, s.maxConc)
	results := make(chan outcome, s.maxConc)
	var wg sync.WaitGroup
	for range s.maxConc { // SetApps may add apps while it runs
		wg.Go(func() { s.work(ctx, jobs, results) })
	}
	inflight := 0
	defer func() {
		close(jobs)
		wg.Wait()
		// Calls cut short by the cancellation say nothing about the app.
		for ; inflight > 0; inflight-- {
			s.abandon(<-results)
		}
	}()

	w := s.newWaker()
	defer w.Stop()
	for {
		if ctx.Err() != nil {
			return nil
		}
		now := s.now()
		var next time.Time
		s.mu.Lock()
		for inflight < s.maxConc && len(s.due) > 0 && !s.due[0].next.After(now) {
			e := heap.Pop(&s.due).(*entry)
			e.running = true
			e.changed = false // the Refresh reads the record after any change reported so far
			jobs <- job{e: e}
			inflight++
		}
		// Then the changed records, with the workers left: due refreshes
		// are at least as urgent, and read the record themselves.
		for inflight < s.maxConc && len(s.pending) > 0 {
			e := s.pending[0]
			s.pending[0] = nil
			s.pending = s.pending[1:]
			e.queued = false
			if !e.changed || e.stopped || e.running || e.peeking || e.index < 0 {
				// A call under way re-queues the app when it ends.
				continue
			}
			e.changed = false
			if s.peeker == nil {
				heap.Remove(&s.due, e.index)
				e.running = true
				jobs <- job{e: e}
			} else {
				e.peeking = true
				jobs <- job{e: e, peek: true}
			}
			inflight++
		}
		if len(s.pending) == 0 {
			s.pending = nil // let the backing array go
		}
		if inflight < s.maxConc && len(s.due) > 0 {
			next = s.due[0].next
		}
		s.mu.Unlock()

		var wake <-chan time.Time
		if !next.IsZero() {
			wake = w.Reset(next.Sub(now))
		}
		if inflight == 0 && s.idle != nil {
			select {
			case s.idle <- next:
			case <-ctx.Done():
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case o := <-results:
			inflight--
			if ctx.Err() != nil {
				// Most likely cut short by the lost lead: not a result.
				s.abandon(o)
				return nil
			}
			if o.peek {
				s.replan(o)
			} else {
				s.finish(o)
			}
		case <-s.kick:
		case <-wake:
		}
	}
}

// plan sets the first next run of every app in apps (not yet queued, so
// no lock is needed for next): from the records a BatchPeeker reads, or at
// once.
func (s *Scheduler) plan(ctx context.Context, apps []*entry) Plan {
	p := Plan{Apps: len(apps)}
	start := s.now()
	for _, e := range apps {
		e.next = start
	}
	if s.batch == nil {
		p.DueNow = len(apps)
		return p
	}
	// A few chunks at once: one chunk's round trips overlap another's
	// decoding.
	// A chunk Redis answered nothing of (down, or frozen until the call
	// timeout) ends the pass: the apps left are due at once, and Refresh
	// copes with Redis as it does at any time.
	var (
		mu     sync.Mutex
		wg     sync.WaitGroup
		sem    = make(chan struct{}, planParallel)
		failed atomic.Bool
	)
	for from := 0; from < len(apps) && ctx.Err() == nil; from += planChunk {
		chunk := apps[from:min(from+planChunk, len(apps))]
		sem <- struct{}{}
		if failed.Load() {
			<-sem
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			ids := make([]string, len(chunk))
			for i, e := range chunk {
				ids[i] = e.app
			}
			cctx, cancel := context.WithTimeout(ctx, s.callTimeout)
			got := s.batch.PeekMany(cctx, ids)
			cancel()
			now := s.now()
			found, errs := 0, 0
			for i := range got {
				if got[i].Err != nil {
					errs++
				}
			}
			if errs == len(chunk) {
				failed.Store(true)
			}
			mu.Lock() // for the jitter source
			defer mu.Unlock()
			for i, e := range chunk {
				if i >= len(got) || got[i].AppID != e.app || got[i].Err != nil || !got[i].Found || !got[i].Token.RefreshAt.After(now) {
					continue // due at once: Refresh decides
				}
				e.next = s.plannedAt(now, got[i].Token)
				found++
			}
			p.FromRecords += found
		})
	}
	wg.Wait()
	p.DueNow = len(apps) - p.FromRecords
	p.Took = s.now().Sub(start)
	return p
}

// plannedAt is the next run for a record read (not refreshed) at now: its
// RefreshAt plus jitter, as after a successful refresh, but never before
// now.
func (s *Scheduler) plannedAt(now time.Time, tok tokencache.Token) time.Time {
	j := min(s.maxJitter, tok.UsableUntil.Sub(tok.RefreshAt)/10)
	at := tok.RefreshAt.Add(s.jitter(j))
	if at.Before(now) {
		at = now
	}
	return at
}

// abandon drops a call's outcome: Run is ending.
func (s *Scheduler) abandon(o outcome) {
	s.mu.Lock()
	if o.peek {
		o.e.peeking = false
	} else {
		o.e.running = false
	}
	s.mu.Unlock()
}

// Changed tells the scheduler that appID's record changed (stored, capped
// or restored by any process): wire it to tokencache's Hooks.OnChange. The
// app's record is then re-read, without fetching, and its next run moved to
// the record's RefreshAt (plus jitter), earlier or later. Without it the
// leader learns of a cap made elsewhere (a failed passive refresh on another
// replica) only when the app's old RefreshAt comes, after the capped token
// ran out.
//
// It never blocks and does no I/O, so the cache's listener goroutine may
// call it: it marks the app and wakes the loop, which reads the record on a
// free worker. A burst of changes to one app costs at most one read under
// way and one after it. While the scheduler is not running (a replica that
// does not lead) it does nothing: Run checks every app when it starts.
// Unknown and stopped apps are ignored.
func (s *Scheduler) Changed(appID string) {
	if !s.running.Load() {
		return
	}
	s.mu.Lock()
	e := s.byApp[appID]
	if e == nil || e.stopped || e.changed {
		s.mu.Unlock()
		return
	}
	e.changed = true
	wake := !e.running && !e.peeking && !e.queued
	if wake {
		e.queued = true
		s.pending = append(s.pending, e)
	}
	s.mu.Unlock()
	if wake {
		select {
		case s.kick <- struct{}{}:
		default: // a wake-up is pending already
		}
	}
}

// requeue queues e for a re-read if a change was reported while a call on
// it ran. The loop looks at pending after every outcome, so no wake-up is
// needed. s.mu must be held.
func (s *Scheduler) requeue(e *entry) {
	if e.stopped {
		e.changed = false
	}
	if e.changed && !e.queued {
		e.queued = true
		s.pending = append(s.pending, e)
	}
}

// replan moves an app's next run after a Peek of its changed record: to the
// record's RefreshAt plus jitter, as after a successful refresh. A record
// that is gone or could not be read makes the app due at once, so a Refresh
// decides (it fetches only if needed and classifies its own failures).
func (s *Scheduler) replan(o outcome) {
	now := s.now()
	e := o.e
	s.mu.Lock()
	e.peeking = false
	if e.running || e.stopped || e.index < 0 {
		// A Refresh started meanwhile; its result plans the next run.
		s.requeue(e)
		s.mu.Unlock()
		return
	}
	prev := e.next
	at := now
	if o.err == nil && o.found {
		at = s.plannedAt(now, o.tok)
	}
	e.next = at
	heap.Fix(&s.due, e.index)
	s.requeue(e)
	s.mu.Unlock()

	switch {
	case o.err != nil || !o.found:
		s.log.Warn("scheduler: the app's record changed and could not be read; refreshing now", "app", e.app, "found", o.found, "err", o.err)
	case at.Before(prev):
		s.log.Info("scheduler: the app's record changed; refresh moved earlier", "app", e.app,
			"token", wechat.Fingerprint(o.tok.Value), "usable_until", o.tok.UsableUntil, "next", at, "was", prev)
	case s.log.Enabled(context.Background(), slog.LevelDebug):
		s.log.Debug("scheduler: the app's record changed; next refresh re-planned", "app", e.app,
			"token", wechat.Fingerprint(o.tok.Value), "next", at, "was", prev)
	}
}

func (s *Scheduler) work(ctx context.Context, jobs <-chan job, results chan<- outcome) {
	for j := range jobs {
		o := outcome{e: j.e, peek: j.peek}
		if err := ctx.Err(); err != nil {
			o.err = err
			results <- o
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, s.callTimeout)
		if j.peek {
			o.tok, o.found, o.err = s.peeker.Peek(cctx, j.e.app)
		} else {
			o.tok, o.err = s.refresher.Refresh(cctx, j.e.app)
		}
		cancel()
		results <- o
	}
}

// finish records a call's outcome and queues the app's next run.
func (s *Scheduler) finish(o outcome) {
	now := s.now()
	class := Class(o.err)
	if class == ClassOK && !o.tok.RefreshAt.After(now) {
		class = ClassStale
	}
	e := o.e

	s.mu.Lock()
	e.running = false
	e.lastRun, e.lastClass, e.lastErr = now, class, o.err
	if class == ClassOK {
		e.failures = 0
		e.version, e.usableUntil = o.tok.Version, o.tok.UsableUntil
	} else {
		e.failures++
	}
	failures := e.failures
	var next time.Time
	if !e.stopped { // a removed app is not queued again
		next = s.nextRun(now, class, o, failures)
		e.next = next
		heap.Push(&s.due, e)
	}
	s.requeue(e) // a change reported during the call may postdate its read
	s.mu.Unlock()

	s.logResult(e.app, class, o, next, failures)
	if s.onResult != nil {
		s.onResult(Result{AppID: e.app, Token: o.tok, Err: o.err, Class: class, Next: next})
	}
}

// nextRun is when an app whose call ended in class is due again.
func (s *Scheduler) nextRun(now time.Time, class string, o outcome, failures int) time.Time {
	var at time.Time
	switch class {
	case ClassOK:
		j := min(s.maxJitter, o.tok.UsableUntil.Sub(o.tok.RefreshAt)/10)
		at = o.tok.RefreshAt.Add(s.jitter(j))
	case ClassHeld:
		var held *tokencache.HeldError
		errors.As(o.err, &held)
		// Jitter spreads apps held until the same moment (a Beijing
		// midnight); a short hold (a transient backoff, often right before
		// the token's usable end) gets a jitter no longer than itself.
		at = held.Until.Add(s.jitter(min(s.maxJitter, held.Until.Sub(now))))
	case ClassQuota:
		at = wechat.NextQuotaReset(now).Add(s.jitter(s.maxJitter))
	case ClassBudget:
		at = now.Add(BudgetRetry)
		if reset := wechat.NextQuotaReset(now); reset.Before(at) {
			at = reset
		}
		at = at.Add(s.jitter(s.maxJitter))
	case ClassMinuteLimit:
		at = now.Add(MinuteLimitDelay).Add(s.jitter(s.maxJitter))
	case ClassConfig:
		// Slowly: a fetch that fails so costs a call of the daily quota.
		at = now.Add(s.configRetry).Add(s.jitter(s.maxJitter))
	default: // transient, unavailable, stale
		ceiling := BackoffMax
		if class == ClassUnavailable || class == ClassStale {
			// Redis failed, not WeChat: a retry costs the upstream nothing,
			// while the token keeps running out. Notice its return soon.
			ceiling = RedisRetryMax
		}
		backoff := BackoffBase << min(failures-1, 16)
		if backoff > ceiling || backoff <= 0 {
			backoff = ceiling
		}
		at = now.Add(backoff/2 + s.jitter(backoff/2))
	}
	if class == ClassOK || class == ClassHeld {
		// The two answers that name a time of their own, which may be
		// very close.
		if earliest := now.Add(MinDelay); at.Before(earliest) {
			at = earliest
		}
	}
	return at
}

// jitter is a random duration in [0, max].
func (s *Scheduler) jitter(max time.Duration) time.Duration {
	if max <= 0 {
		return 0
	}
	return time.Duration(s.randN(int64(max) + 1))
}

func (s *Scheduler) logResult(app, class string, o outcome, next time.Time, failures int) {
	ctx := context.Background()
	switch class {
	case ClassOK:
		if s.log.Enabled(ctx, slog.LevelDebug) {
			s.log.Debug("scheduler: token fresh", "app", app, "token", wechat.Fingerprint(o.tok.Value),
				"version", o.tok.Version, "usable_until", o.tok.UsableUntil, "next", next)
		}
	case ClassConfig:
		s.log.Error("scheduler: configuration error; retrying slowly, and at once after a configuration reload",
			"app", app, "class", class, "next", next, "err", o.err)
	case ClassQuota:
		s.log.Error("scheduler: WeChat daily quota exhausted; not refreshing this app until Beijing midnight",
			"app", app, "class", class, "next", next, "err", o.err)
	case ClassBudget:
		s.log.Error("scheduler: daily fetch budget used up; retrying every few minutes until Beijing midnight",
			"app", app, "class", class, "next", next, "err", o.err)
	default:
		s.log.Warn("scheduler: refresh failed", "app", app, "class", class, "failures", failures, "next", next, "err", o.err)
	}
}

// Class names what kind of outcome err is, which decides the next run.
// What WeChat said is wechat.ClassName's (and the 45011 rule
// wechat.MinuteLimited's); everything else is the cache's own errors. The
// order matters where an error matches two: a hold caused by a
// configuration error is config, any other hold is held.
func Class(err error) string {
	if err == nil {
		return ClassOK // before the targets below, which escape to the heap
	}
	upstream := wechat.ClassName(err)
	var held *tokencache.HeldError
	switch {
	case upstream == "config", errors.Is(err, tokencache.ErrInvalidAppID):
		// Before held: a hold caused by a configuration error ends after a
		// while, but the error will not.
		return ClassConfig
	case errors.As(err, &held):
		return ClassHeld
	case upstream == "quota":
		return ClassQuota
	case errors.Is(err, tokencache.ErrBudgetExceeded):
		return ClassBudget
	case upstream == "transient" && wechat.MinuteLimited(err):
		return ClassMinuteLimit
	case errors.Is(err, tokencache.ErrUnavailable):
		return ClassUnavailable
	}
	// Other transient failures, and what Refresh should not return at all
	// (a dead business token, a passive-refresh limit, ErrClosed, a corrupt
	// record it could not replace): retried with the backoff.
	return ClassTransient
}

// SetApps makes apps the set refreshed, in that order: an added app is due
// at once (if Run runs; else when it starts), a removed one is no longer
// refreshed (a call under way on it ends, its result is not planned).
// Apps kept keep their state. It validates apps as New does; on error
// nothing changes.
func (s *Scheduler) SetApps(apps []string) (added, removed []string, err error) {
	seen := make(map[string]bool, len(apps))
	for i, app := range apps {
		switch {
		case app == "":
			return nil, nil, fmt.Errorf("scheduler: SetApps: apps[%d]: empty appid", i)
		case seen[app]:
			return nil, nil, fmt.Errorf("scheduler: SetApps: appid %q listed twice", app)
		}
		seen[app] = true
	}
	if len(apps) == 0 {
		return nil, nil, errors.New("scheduler: SetApps: must name at least one app")
	}
	now := s.now()
	s.mu.Lock()
	for _, e := range s.entries {
		if !seen[e.app] {
			removed = append(removed, e.app)
			e.stopped = true
			if e.index >= 0 {
				heap.Remove(&s.due, e.index)
			}
			delete(s.byApp, e.app)
		}
	}
	entries := make([]*entry, 0, len(apps))
	for _, app := range apps {
		e := s.byApp[app]
		if e == nil {
			added = append(added, app)
			e = &entry{app: app, index: -1}
			s.byApp[app] = e
			if s.running.Load() {
				e.next = now
				heap.Push(&s.due, e)
			}
		}
		entries = append(entries, e)
	}
	s.entries = entries
	s.mu.Unlock()
	s.wake()
	return added, removed, nil
}

// RetryNow makes the named apps due at once: after a reload, an app held
// for a configuration error (or whose secret changed) is tried again
// without waiting for its slow retry. Unknown apps, apps whose call is
// under way and a scheduler that is not running are left alone.
func (s *Scheduler) RetryNow(apps ...string) {
	now := s.now()
	s.mu.Lock()
	for _, app := range apps {
		if e := s.byApp[app]; e != nil && e.index >= 0 && e.next.After(now) {
			e.next = now
			heap.Fix(&s.due, e.index)
		}
	}
	s.mu.Unlock()
	s.wake()
}

func (s *Scheduler) wake() {
	select {
	case s.kick <- struct{}{}:
	default: // a wake-up is pending already
	}
}

// Snapshot returns every app's state, in Config.Apps order.
func (s *Scheduler) Snapshot() []AppStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]AppStatus, len(s.entries))
	for i, e := range s.entries {
		out[i] = AppStatus{
			AppID: e.app, Running: e.running, Stopped: e.stopped,
			LastRun: e.lastRun, LastClass: e.lastClass, LastErr: e.lastErr,
			ConsecutiveFailures: e.failures, TokenVersion: e.version, UsableUntil: e.usableUntil,
		}
		if e.index >= 0 {
			out[i].Next = e.next
		}
	}
	return out
}

// timerHeap orders entries by next run.
type timerHeap []*entry

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].next.Before(h[j].next) }
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *timerHeap) Push(x any) {
	e := x.(*entry)
	e.index = len(*h)
	*h = append(*h, e)
}
func (h *timerHeap) Pop() any {
	old := *h
	n := len(old)
	e := old[n-1]
	old[n-1] = nil
	e.index = -1
	*h = old[:n-1]
	return e
}

// waker is the loop's one timer.
type waker interface {
	// Reset arms the timer to fire after d and returns its channel.
	Reset(d time.Duration) <-chan time.Time
	Stop()
}

type timerWaker struct{ t *time.Timer }

func (w *timerWaker) Reset(d time.Duration) <-chan time.Time {
	if w.t == nil {
		w.t = time.NewTimer(d)
	} else {
		// Since Go 1.23 Reset also discards a value the old timer sent and
		// nobody received, so no stale wake-up follows.
		w.t.Reset(d)
	}
	return w.t.C
}

func (w *timerWaker) Stop() {
	if w.t != nil {
		w.t.Stop()
	}
}
