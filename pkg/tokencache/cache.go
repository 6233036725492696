package tokencache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"

	"github.com/tokenkeeper/tokenkeeper/pkg/lock"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// Source fetches a new token for an app from upstream. *wechat.Source is
// one. Implementations must be safe for concurrent use.
type Source interface {
	Fetch(ctx context.Context, appID string) (wechat.Token, error)
}

// ModeSource is a Source that knows each app's mode. A Source that does not
// implement it is treated as Classic, the mode that needs every precaution.
type ModeSource interface {
	Mode(appID string) wechat.Mode
}

// Cache hands out one live token per app to every process that shares its
// Redis. It is safe for concurrent use; build one per process with New and
// Close it on shutdown.
type Cache struct {
	client  redis.UniversalClient
	src     Source
	opt     options
	locker  lock.Locker
	log     *slog.Logger
	channel string

	apps sync.Map // appID → *appState: lock-free loads on the hit path, O(1) adds

	flight singleflight.Group
	stats  counters

	ctx     context.Context // cancelled by Close; parent of background work
	cancel  context.CancelFunc
	closeMu sync.Mutex
	closed  bool
	wg      sync.WaitGroup // background refreshes, fetch flights, the listener
	pubsub  *redis.PubSub
}

// appState is everything the cache keeps for one app.
type appState struct {
	id   string
	mode wechat.Mode
	keys keys

	near       nearCopy
	refreshing atomic.Bool
	holdUntil  atomic.Int64 // Unix ms; fetching is suspended before it

	mu       sync.Mutex
	changed  chan struct{} // closed whenever the app's record changes; made by the first waiter after that
	holdErr  error
	failures int
}

// New builds a Cache on client (standalone, Sentinel or Cluster) that
// fetches from src. It subscribes to the change channel at once; Redis need
// not be up yet.
func New(client redis.UniversalClient, src Source, opts ...Option) (*Cache, error) {
	if client == nil {
		return nil, errors.New("tokencache: nil redis client")
	}
	if src == nil {
		return nil, errors.New("tokencache: nil source")
	}
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	if o.logger == nil {
		o.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.locker == nil {
		o.locker = lock.NewRedisLocker(client)
	}
	c := &Cache{
		client:  client,
		src:     src,
		opt:     o,
		locker:  o.locker,
		log:     o.logger,
		channel: o.KeyPrefix + "events",
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.pubsub = client.Subscribe(c.ctx, c.channel)
	c.wg.Add(1)
	go c.listen()
	return c, nil
}

// Close stops background work and the subscription. The Redis client is the
// caller's and stays open.
func (c *Cache) Close() error {
	c.closeMu.Lock()
	if c.closed {
		c.closeMu.Unlock()
		return nil
	}
	c.closed = true
	c.closeMu.Unlock()
	c.cancel()
	err := c.pubsub.Close()
	c.wg.Wait()
	return err
}

// track registers one piece of background work with Close, unless the cache
// is closed already.
func (c *Cache) track() bool {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	if c.closed {
		return false
	}
	c.wg.Add(1)
	return true
}

// Token returns a live token for appID. In steady state it answers from
// memory without any I/O; when the token is due it still answers at once and
// one background refresh runs for the whole fleet. Only when no usable
// token exists does it wait for a fetch (by this process or another).
func (c *Cache) Token(ctx context.Context, appID string) (Token, error) {
	st, err := c.app(appID)
	if err != nil {
		return Token{}, err
	}
	if e := st.near.cur.Load(); e != nil && e.current {
		now := c.hitNow(e)
		if !now.Before(e.serveUntil) {
			return c.tokenSlow(ctx, st)
		}
		if !now.Before(e.revalidateAt) {
			c.revalidateInBackground(st)
		}
		if !now.Before(e.tok.RefreshAt) {
			c.refreshInBackground(st, now)
		}
		return e.tok, nil
	}
	return c.tokenSlow(ctx, st)
}

// hitNow is the time on the hit path: the wall clock when Redis last
// confirmed e plus the monotonic time since, one clock reading instead of
// time.Now's two (it is half the cost of a hit). A step of the wall clock is
// seen at the next confirmation, within the near max age.
func (c *Cache) hitNow(e *nearEntry) time.Time {
	if c.opt.clockSet {
		return c.opt.now()
	}
	return e.confirmedAt.Add(time.Since(e.confirmedAt))
}

func (c *Cache) tokenSlow(ctx context.Context, st *appState) (Token, error) {
	c.stats.nearMisses.Add(1)
	tok, found, err := c.readShared(ctx, st)
	now := c.opt.now() // the read may have taken long (a Redis that is going down)
	switch {
	case err == nil && found && now.Before(tok.UsableUntil):
		if st.near.isDead(tok.Value) {
			// Verified dead, but its replacement could not be stored.
			return c.fetch(ctx, st, condReplace, tok.Value)
		}
		c.stats.redisHits.Add(1)
		if !now.Before(tok.RefreshAt) {
			c.refreshInBackground(st, now)
		}
		return tok, nil
	case errors.Is(err, ErrCorruptRecord):
		if tok, ok := st.near.lastGood(now); ok {
			c.refreshInBackground(st, now)
			return tok, nil
		}
	case err != nil:
		return c.redisDown(ctx, st, err)
	}
	c.stats.misses.Add(1)
	return c.fetch(ctx, st, condUsable, "")
}

// revalidateInBackground re-reads a current copy before it grows older than
// the near max age: one read per app at a time, while readers keep being
// served. If Redis does not answer, the copy serves on until its horizon.
func (c *Cache) revalidateInBackground(st *appState) {
	// Load first: a failed CompareAndSwap still takes the cache line, and
	// every parallel hit would bounce it while a read is in flight.
	if st.near.revalidating.Load() || !st.near.revalidating.CompareAndSwap(false, true) {
		return
	}
	if !c.track() {
		st.near.revalidating.Store(false)
		return
	}
	go func() {
		defer c.wg.Done()
		defer st.near.revalidating.Store(false)
		ctx, cancel := context.WithTimeout(c.ctx, c.opt.LockTTL)
		defer cancel()
		_, _, err := c.read(ctx, st)
		switch {
		case err == nil:
			c.stats.revalidations.Add(1)
		case errors.Is(err, ErrCorruptRecord):
			c.refreshInBackground(st, c.opt.now())
		default:
			// Redis did not answer: the copy serves on until its horizon;
			// try again a little later, not on every hit.
			c.stats.revalidationErrors.Add(1)
			st.near.retryLater(c.opt.now().Add(revalidateRetry))
		}
	}()
}

// revalidateRetry is how long a copy waits after a failed background read
// before the next one.
const revalidateRetry = time.Second

// corrupt reports a record Redis holds that is not valid. It is never
// served; the next fetch (one for the whole fleet) replaces it.
func (c *Cache) corrupt(st *appState, err error) {
	c.stats.corrupt.Add(1)
	c.log.Error("tokencache: stored record is corrupt; it will be replaced", "app", st.id, "err", err)
}

// redisDown answers when Redis could not be read. A Redis error is never a
// miss: fetching on every request during an outage would burn the quota and,
// for classic apps, let instances invalidate each other.
func (c *Cache) redisDown(ctx context.Context, st *appState, cause error) (Token, error) {
	// A fresh reading: the failed Redis call may have taken a while.
	if tok, ok := st.near.lastGood(c.opt.now()); ok {
		c.stats.servedStale.Add(1)
		return tok, nil
	}
	if st.mode == wechat.Stable {
		// A stable fetch returns the token WeChat already has; it cannot
		// invalidate anyone's, so it is safe without the lock.
		return c.fetchUnlocked(ctx, st)
	}
	return Token{}, fmt.Errorf("%w: app %q: %w", ErrUnavailable, st.id, cause)
}

// Invalidate is the passive refresh: a caller saw bad fail with 40001,
// 40014 or 42001. A report costs a fetch only when it must:
//   - bad is not the current token (already replaced, or junk): the
//     current one is returned, and nothing is spent;
//   - bad is current: WeChat is asked, with one call that mints nothing,
//     whether it still accepts bad (the verdict is shared fleet-wide); if
//     it does, bad is returned again;
//   - bad is verified dead (or WeChat cannot tell): one fetch for the whole
//     fleet, within a fleet-wide rate of passive refreshes and a share of
//     the daily budget that leaves the scheduler its reserve.
//
// So a thousand callers reporting the same dead token cause one fetch, and
// no caller can spend the quota by reporting live tokens.
func (c *Cache) Invalidate(ctx context.Context, appID, bad string) (Token, error) {
	st, err := c.app(appID)
	if err != nil {
		return Token{}, err
	}
	if bad == "" {
		return Token{}, errors.New("tokencache: invalidate: empty token")
	}
	tok, found, err := c.read(ctx, st)
	if err != nil && !errors.Is(err, ErrCorruptRecord) {
		if cur, ok := st.near.lastGood(c.opt.now()); ok && cur.Value == bad {
			c.judge(ctx, st, bad)
		}
		return c.redisDown(ctx, st, err)
	}
	now := c.opt.now()
	if found && satisfied(tok, condReplace, bad, now) {
		c.stats.invalidationsIgnored.Add(1)
		return tok, nil
	}
	if found && tok.Value == bad && now.Before(tok.UsableUntil) {
		v := c.judge(ctx, st, bad)
		if v == verdictAlive {
			c.stats.invalidationsRefuted.Add(1)
			c.log.Info("tokencache: token reported invalid, but WeChat still accepts it; keeping it", "app", st.id, "token", wechat.Fingerprint(bad))
			return tok, nil
		}
		if v == verdictDead {
			// Under the cache's invariant the fleet never hands out a token
			// it killed: the stored token dying before its usable end means
			// a fetch outside the fleet (or WeChat itself) killed it.
			c.stats.killedOutside.Add(1)
			c.log.Error("tokencache: the current token was killed outside the fleet: is this app's secret used elsewhere?",
				"app", st.id, "token", wechat.Fingerprint(bad), "usable_until", tok.UsableUntil)
			if h := c.opt.hooks.OnKilledOutside; h != nil {
				h(st.id)
			}
		}
	}
	c.stats.invalidations.Add(1)
	c.log.Info("tokencache: token reported invalid; refreshing", "app", st.id, "token", wechat.Fingerprint(bad))
	return c.fetch(ctx, st, condReplace, bad)
}

// Admin is the operator's view of a Cache: refreshing on a schedule,
// reading the record without fetching, the budget used, holds and
// counters. An application needs none of it (Token, Invalidate and App are
// its whole surface); the refresher, its scheduler, status and metrics
// use this.
type Admin struct{ c *Cache }

// Admin returns the operator's view of c.
func (c *Cache) Admin() Admin { return Admin{c} }

// Refresh makes sure appID has a token that is not due for refresh,
// fetching one (once for the whole fleet) if needed. The refresher's
// scheduler calls it ahead of expiry. During a Redis outage it returns the
// last good token, which may be due, with a nil error: nothing can be
// refreshed safely until Redis is back.
func (a Admin) Refresh(ctx context.Context, appID string) (Token, error) {
	c := a.c
	st, err := c.app(appID)
	if err != nil {
		return Token{}, err
	}
	// Most calls find the token not yet due: one GET, no lock.
	if tok, found, err := c.read(ctx, st); err == nil && found && satisfied(tok, condDue, "", c.opt.now()) {
		return tok, nil
	}
	return c.fetch(ctx, st, condDue, "")
}

// Peek reads appID's record from Redis and never fetches. Like every read,
// it refreshes this process's in-memory copy with what it found.
func (a Admin) Peek(ctx context.Context, appID string) (tok Token, found bool, err error) {
	c := a.c
	st, err := c.app(appID)
	if err != nil {
		return Token{}, false, err
	}
	return c.read(ctx, st)
}

// FetchesToday is how many upstream fetches every process together has
// started for appID in the current Beijing day.
func (a Admin) FetchesToday(ctx context.Context, appID string) (int64, error) {
	c := a.c
	st, err := c.app(appID)
	if err != nil {
		return 0, err
	}
	n, err := c.client.Get(ctx, st.keys.budget+wechat.QuotaDay(c.opt.now())).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return n, err
}

// Held reports whether fetching for appID is suspended after a failure, and
// why.
func (a Admin) Held(appID string) (until time.Time, cause error) {
	c := a.c
	st, err := c.app(appID)
	if err != nil {
		return time.Time{}, err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	ms := st.holdUntil.Load()
	if ms == 0 || !c.opt.now().Before(time.UnixMilli(ms)) {
		return time.Time{}, nil
	}
	return time.UnixMilli(ms), st.holdErr
}

// read gets and decodes the app's record, and hands it to the near copy.
// found is false when there is none.
func (c *Cache) read(ctx context.Context, st *appState) (Token, bool, error) {
	for range 3 {
		gen := st.near.generation()
		sentAt := c.opt.now()
		tok, found, raced, err := c.adoptAnswer(st, c.client.Get(ctx, st.keys.record), gen, sentAt)
		if !raced {
			return tok, found, err
		}
		// A newer change was announced while the read was under way: what
		// it brought may be gone already. Read again.
	}
	return Token{}, false, nil
}

// adoptAnswer hands what a GET of st's record answered (sent at sentAt,
// with the near copy at generation gen) to the near copy: the one rule for
// every read, alone or pipelined. A missing record marks the copy stale, a
// corrupt one is counted and reported; raced is true when a newer change
// was announced while the GET was under way, and the caller reads again.
func (c *Cache) adoptAnswer(st *appState, cmd *redis.StringCmd, gen uint64, sentAt time.Time) (tok Token, found, raced bool, err error) {
	s, err := cmd.Result()
	switch {
	case errors.Is(err, redis.Nil):
		st.near.stale(false)
		return Token{}, false, false, nil
	case err != nil:
		return Token{}, false, false, fmt.Errorf("tokencache: read %q: %w", st.keys.record, err)
	}
	if tok, err = DecodeRecord(st.keys.record, s); err != nil {
		st.near.stale(false)
		c.corrupt(st, err)
		return Token{}, false, false, err
	}
	if !st.near.adopt(tok, sentAt, gen, &c.opt) {
		return Token{}, false, true, nil
	}
	return tok, true, false, nil
}

// readShared is read, once for every caller of this process that needs the
// app's record at the same time (after a rotation every reader's copy is
// superseded at once). Each caller waits only as long as its context allows.
func (c *Cache) readShared(ctx context.Context, st *appState) (Token, bool, error) {
	if c.opt.NearMaxAge == 0 {
		return c.read(ctx, st) // no near cache: every call reads Redis, as asked
	}
	type result struct {
		tok   Token
		found bool
	}
	ch := c.flight.DoChan(st.id+"\x00read", func() (any, error) {
		if !c.track() {
			return result{}, ErrClosed
		}
		defer c.wg.Done()
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opt.LockTTL)
		defer cancel()
		stop := context.AfterFunc(c.ctx, cancel)
		defer stop()
		tok, found, err := c.read(rctx, st)
		return result{tok, found}, err
	})
	select {
	case r := <-ch:
		v, _ := r.Val.(result)
		return v.tok, v.found, r.Err
	case <-ctx.Done():
		return Token{}, false, ctx.Err()
	}
}

// app returns the state of appID, creating it on first use. The common case
// is one lock-free map load.
func (c *Cache) app(appID string) (*appState, error) {
	if st, ok := c.apps.Load(appID); ok {
		return st.(*appState), nil
	}
	return c.addApp(appID)
}

func (c *Cache) addApp(appID string) (*appState, error) {
	if err := validAppID(appID); err != nil {
		return nil, err
	}
	mode := wechat.Classic
	if m, ok := c.opt.modes[appID]; ok {
		mode = m
	} else if ms, ok := c.src.(ModeSource); ok {
		mode = ms.Mode(appID)
	}
	st := &appState{id: appID, mode: mode, keys: appKeys(c.opt.KeyPrefix, appID)}
	got, _ := c.apps.LoadOrStore(appID, st)
	return got.(*appState), nil
}

func validAppID(id string) error {
	if reason := AppIDProblem(id); reason != "" {
		return fmt.Errorf("%w %q: %s", ErrInvalidAppID, id, reason)
	}
	return nil
}

// AppIDProblem is the rule for appids (they name Redis keys): what is wrong
// with id, or "" if nothing is. It does not quote id, which may be a secret
// pasted into the wrong place.
func AppIDProblem(id string) string {
	if id == "" || len(id) > 64 {
		return "must be 1 to 64 characters"
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return "only letters, digits, '_', '-' and '.' are allowed"
		}
	}
	return ""
}

// listen applies change messages and wakes everyone waiting for another
// process's fetch. A (re)subscription means anything announced while we
// were not subscribed is lost: every copy must then be confirmed before use.
func (c *Cache) listen() {
	defer c.wg.Done()
	for m := range c.pubsub.ChannelWithSubscriptions() {
		switch msg := m.(type) {
		case *redis.Subscription:
			if msg.Kind == "subscribe" {
				c.apps.Range(func(_, v any) bool {
					st := v.(*appState)
					st.near.stale(true)
					if h := c.opt.hooks.OnChange; h != nil {
						h(st.id) // a change may have been missed
					}
					st.notify()
					return true
				})
				// Counted once every copy is marked: whoever sees the
				// count (a test, an operator) sees the gap handled.
				c.stats.gaps.Add(1)
			}
		case *redis.Message:
			ann, ok := parseAnnouncement(msg.Payload)
			if !ok {
				c.log.Warn("tokencache: ignoring a malformed change message", "channel", msg.Channel)
				continue
			}
			v, ok := c.apps.Load(ann.app)
			if !ok {
				continue
			}
			st := v.(*appState)
			if st.near.announced(ann, &c.opt) {
				if h := c.opt.hooks.OnChange; h != nil {
					h(st.id)
				}
			}
			st.notify()
		}
	}
}

// announcement is a change message: the record of app as it now is. A
// message of rev 0 changes nothing; it wakes the processes waiting for a
// fetch that stored nothing.
type announcement struct {
	app         string
	version     int64
	rev         int64
	usableUntil time.Time
	fetchedAt   time.Time
}

// wakeMessage is the announcement of rev 0 for app.
func wakeMessage(app string) string { return app + " 0 0 0 0" }

func parseAnnouncement(s string) (announcement, bool) {
	f := strings.Fields(s)
	if len(f) != 5 {
		return announcement{}, false
	}
	var n [4]int64
	for i := range n {
		v, ok := parseRecordNumber(f[i+1])
		if !ok {
			return announcement{}, false
		}
		n[i] = v
	}
	return announcement{app: f[0], version: n[0], rev: n[1], usableUntil: time.UnixMilli(n[2]), fetchedAt: time.UnixMilli(n[3])}, true
}

func (st *appState) changedChan() <-chan struct{} {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.changed == nil {
		// Made on demand: most apps of a large fleet never have a waiter.
		st.changed = make(chan struct{})
	}
	return st.changed
}

func (st *appState) notify() {
	st.mu.Lock()
	if st.changed != nil {
		close(st.changed)
		st.changed = nil
	}
	st.mu.Unlock()
}

// Stats are the cache's counters since New. Hits on the near copy are not
// counted: a shared counter on the hit path would cost every parallel
// reader a contended cache line; NearMisses counts the calls it did not
// answer.
type Stats struct {
	NearMisses           int64 // calls the near copy did not answer
	RedisHits            int64 // answered from Redis
	Misses               int64 // no usable token: waited for a fetch
	Fetches              int64 // upstream fetches this process sent
	FetchErrors          int64 // of which failed
	Refused              int64 // fetched tokens whose write lost the compare-and-set
	LockWaits            int64 // waits for another holder's fetch
	ServedStale          int64 // answered from memory after a Redis error
	Revalidations        int64 // background reads that confirmed a near copy
	RevalidationErrors   int64 // background reads Redis did not answer (the copy kept serving)
	BackgroundRefreshes  int64 // refreshes started while serving a due token
	Invalidations        int64 // passive refreshes that fetched or waited
	InvalidationsIgnored int64 // reports of a token already replaced (or never current)
	InvalidationsRefuted int64 // reports of the current token that WeChat still accepted
	KilledOutside        int64 // current tokens verified dead before their usable end
	CorruptRecords       int64 // corrupt records read from Redis
	SubscriptionGaps     int64 // (re)subscriptions: announcements may have been missed
}

type counters struct {
	nearMisses, redisHits, misses, fetches, fetchErrors, refused, lockWaits, servedStale, background,
	invalidations, invalidationsIgnored, invalidationsRefuted, killedOutside, corrupt, gaps,
	revalidations, revalidationErrors atomic.Int64
}

// Stats returns a snapshot of the counters.
func (a Admin) Stats() Stats {
	c := a.c
	s := &c.stats
	return Stats{
		NearMisses: s.nearMisses.Load(), RedisHits: s.redisHits.Load(), Misses: s.misses.Load(),
		Fetches: s.fetches.Load(), FetchErrors: s.fetchErrors.Load(), Refused: s.refused.Load(),
		LockWaits: s.lockWaits.Load(), ServedStale: s.servedStale.Load(), BackgroundRefreshes: s.background.Load(),
		Invalidations: s.invalidations.Load(), InvalidationsIgnored: s.invalidationsIgnored.Load(),
		InvalidationsRefuted: s.invalidationsRefuted.Load(), KilledOutside: s.killedOutside.Load(),
		CorruptRecords: s.corrupt.Load(), SubscriptionGaps: s.gaps.Load(),
		Revalidations: s.revalidations.Load(), RevalidationErrors: s.revalidationErrors.Load(),
	}
}
