package tokencache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
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

	apps   atomic.Pointer[map[string]*appState] // copy on write: the hit path takes no lock
	appsMu sync.Mutex

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
	id         string
	mode       wechat.Mode
	recordKey  string
	intentsKey string
	versionKey string
	lockName   string
	budgetKey  string // + YYYYMMDD (Beijing day)

	near       atomic.Pointer[nearEntry]
	announced  atomic.Pointer[announcement] // the latest change message for the app
	refreshing atomic.Bool
	holdUntil  atomic.Int64 // Unix ms; fetching is suspended before it

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced whenever the app's record changes
	holdErr  error
	failures int
}

type nearEntry struct {
	tok      Token
	loadedAt time.Time // zero once a change message said Redis has moved on
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
		channel: o.keyPrefix + "events",
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	empty := map[string]*appState{}
	c.apps.Store(&empty)
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
	now := c.opt.now()
	if e := st.near.Load(); e != nil && now.Before(e.tok.UsableUntil) && now.Sub(e.loadedAt) < c.opt.nearMaxAge {
		c.stats.nearHits.Add(1)
		if !now.Before(e.tok.RefreshAt) {
			c.refreshInBackground(st, now)
		}
		return e.tok, nil
	}
	return c.tokenSlow(ctx, st, now)
}

func (c *Cache) tokenSlow(ctx context.Context, st *appState, now time.Time) (Token, error) {
	tok, found, err := c.read(ctx, st, now)
	now = c.opt.now() // the read may have taken long (a Redis that is going down)
	switch {
	case err == nil && found && now.Before(tok.UsableUntil):
		c.stats.redisHits.Add(1)
		if !now.Before(tok.RefreshAt) {
			c.refreshInBackground(st, now)
		}
		return tok, nil
	case errors.Is(err, ErrCorruptRecord):
		c.stats.corrupt.Add(1)
		c.log.Error("tokencache: stored record is corrupt; it will be replaced", "app", st.id, "err", err)
		if tok, ok := c.lastGood(st, now); ok {
			c.refreshInBackground(st, now)
			return tok, nil
		}
	case err != nil:
		return c.redisDown(ctx, st, err)
	}
	c.stats.misses.Add(1)
	return c.fetch(ctx, st, condUsable, "")
}

// redisDown answers when Redis could not be read. A Redis error is never a
// miss: fetching on every request during an outage would burn the quota and,
// for classic apps, let instances invalidate each other.
func (c *Cache) redisDown(ctx context.Context, st *appState, cause error) (Token, error) {
	// A fresh reading: the failed Redis call may have taken a while.
	if tok, ok := c.lastGood(st, c.opt.now()); ok {
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

// lastGood is the near copy if WeChat still accepts it, however old the
// copy is.
func (c *Cache) lastGood(st *appState, now time.Time) (Token, bool) {
	if e := st.near.Load(); e != nil && now.Before(e.tok.UsableUntil) {
		return e.tok, true
	}
	return Token{}, false
}

// Invalidate is the passive refresh: a caller saw bad fail with 40001,
// 40014 or 42001. It fetches a new token only if bad is still the current
// one, so a thousand callers reporting the same dead token cause one fetch,
// and a caller reporting a token that was already replaced just gets the
// current one.
func (c *Cache) Invalidate(ctx context.Context, appID, bad string) (Token, error) {
	st, err := c.app(appID)
	if err != nil {
		return Token{}, err
	}
	if bad == "" {
		return Token{}, errors.New("tokencache: invalidate: empty token")
	}
	if e := st.near.Load(); e != nil && e.tok.Value == bad {
		st.near.CompareAndSwap(e, nil)
	}
	tok, found, err := c.read(ctx, st, c.opt.now())
	if err != nil && !errors.Is(err, ErrCorruptRecord) {
		return c.redisDown(ctx, st, err)
	}
	if found && satisfied(tok, condReplace, bad, c.opt.now()) { // read kept it in memory
		c.stats.invalidationsIgnored.Add(1)
		return tok, nil
	}
	c.stats.invalidations.Add(1)
	c.log.Info("tokencache: token reported invalid; refreshing", "app", st.id, "token", wechat.Fingerprint(bad))
	return c.fetch(ctx, st, condReplace, bad)
}

// Refresh makes sure appID has a token that is not due for refresh,
// fetching one (once for the whole fleet) if needed. The refresher's
// scheduler calls it ahead of expiry. During a Redis outage it returns the
// last good token, which may be due, with a nil error: nothing can be
// refreshed safely until Redis is back.
func (c *Cache) Refresh(ctx context.Context, appID string) (Token, error) {
	st, err := c.app(appID)
	if err != nil {
		return Token{}, err
	}
	// Most calls find the token not yet due: one GET, no lock.
	if tok, found, err := c.read(ctx, st, c.opt.now()); err == nil && found && satisfied(tok, condDue, "", c.opt.now()) {
		return tok, nil
	}
	return c.fetch(ctx, st, condDue, "")
}

// Peek reads appID's record from Redis and never fetches. Like every read,
// it refreshes this process's in-memory copy with what it found.
func (c *Cache) Peek(ctx context.Context, appID string) (tok Token, found bool, err error) {
	st, err := c.app(appID)
	if err != nil {
		return Token{}, false, err
	}
	return c.read(ctx, st, c.opt.now())
}

// FetchesToday is how many upstream fetches every process together has
// started for appID in the current Beijing day.
func (c *Cache) FetchesToday(ctx context.Context, appID string) (int64, error) {
	st, err := c.app(appID)
	if err != nil {
		return 0, err
	}
	n, err := c.client.Get(ctx, st.budgetKey+wechat.QuotaDay(c.opt.now())).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return n, err
}

// Held reports whether fetching for appID is suspended after a failure, and
// why.
func (c *Cache) Held(appID string) (until time.Time, cause error) {
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

// read gets and decodes the app's record. found is false when there is none.
func (c *Cache) read(ctx context.Context, st *appState, now time.Time) (Token, bool, error) {
	s, err := c.client.Get(ctx, st.recordKey).Result()
	if errors.Is(err, redis.Nil) {
		return Token{}, false, nil
	}
	if err != nil {
		return Token{}, false, fmt.Errorf("tokencache: read %q: %w", st.recordKey, err)
	}
	tok, err := decodeRecord(st.recordKey, s)
	if err != nil {
		return Token{}, false, err
	}
	c.storeNear(st, tok, now)
	return tok, true, nil
}

func (c *Cache) storeNear(st *appState, tok Token, now time.Time) {
	// Even with the near cache off (near max age 0) the last good token is
	// kept for Redis outages; loadedAt decides whether it serves hits.
	e := &nearEntry{tok: tok, loadedAt: now}
	// A read can race a change: it may return the record a newer token has
	// just replaced, after that change was announced. What the announcement
	// said still applies to what the read brought.
	if a := st.announced.Load(); a != nil {
		if next, changed := a.apply(e, c.opt.capWindow()); changed {
			e = next
		}
	}
	st.near.Store(e)
}

// app returns the state of appID, creating it on first use. The common case
// is one atomic load and a map lookup.
func (c *Cache) app(appID string) (*appState, error) {
	if st, ok := (*c.apps.Load())[appID]; ok {
		return st, nil
	}
	return c.addApp(appID)
}

func (c *Cache) addApp(appID string) (*appState, error) {
	if err := validAppID(appID); err != nil {
		return nil, err
	}
	c.appsMu.Lock()
	defer c.appsMu.Unlock()
	old := *c.apps.Load()
	if st, ok := old[appID]; ok {
		return st, nil
	}
	mode := wechat.Classic
	if m, ok := c.opt.modes[appID]; ok {
		mode = m
	} else if ms, ok := c.src.(ModeSource); ok {
		mode = ms.Mode(appID)
	}
	base := c.opt.keyPrefix + "{" + appID + "}:"
	st := &appState{
		id:         appID,
		mode:       mode,
		recordKey:  base + "token",
		intentsKey: base + "intents",
		versionKey: base + "version",
		lockName:   base + "lock",
		budgetKey:  base + "fetches:",
		changed:    make(chan struct{}),
	}
	next := make(map[string]*appState, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[appID] = st
	c.apps.Store(&next)
	return st, nil
}

func validAppID(id string) error {
	if id == "" || len(id) > 64 {
		return fmt.Errorf("%w %q: must be 1 to 64 characters", ErrInvalidAppID, id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return fmt.Errorf("%w %q: only letters, digits, '_', '-' and '.' are allowed", ErrInvalidAppID, id)
		}
	}
	return nil
}

// listen applies change messages and wakes everyone waiting for another
// process's fetch.
func (c *Cache) listen() {
	defer c.wg.Done()
	for msg := range c.pubsub.Channel() {
		ann, ok := parseAnnouncement(msg.Payload)
		if !ok {
			c.log.Warn("tokencache: ignoring a malformed change message", "channel", msg.Channel)
			continue
		}
		st, ok := (*c.apps.Load())[ann.app]
		if !ok {
			continue
		}
		st.announced.Store(&ann)
		if e := st.near.Load(); e != nil {
			if next, changed := ann.apply(e, c.opt.capWindow()); changed {
				st.near.CompareAndSwap(e, next)
			}
		}
		st.notify()
	}
}

// announcement is a change message: the record of app as it now is.
type announcement struct {
	app         string
	version     int64
	usableUntil time.Time
	fetchedAt   time.Time
}

func parseAnnouncement(s string) (announcement, bool) {
	f := strings.Fields(s)
	if len(f) != 4 {
		return announcement{}, false
	}
	var n [3]int64
	for i := range n {
		v, err := strconv.ParseInt(f[i+1], 10, 64)
		if err != nil {
			return announcement{}, false
		}
		n[i] = v
	}
	return announcement{app: f[0], version: n[0], usableUntil: time.UnixMilli(n[1]), fetchedAt: time.UnixMilli(n[2])}, true
}

// apply returns what the near copy e becomes after the announcement.
//   - Same record (version and fetch time): it was capped or its cap
//     lifted; take its usable end as Redis now has it.
//   - An older record: a message overtaken by what we already hold.
//   - Anything else is a newer token (after a Redis data loss its version
//     may be lower, its fetch time is not): the copy stops serving hits at
//     once. It is kept as the last good token for a Redis outage, but only
//     as long as a token invalidated by that newer fetch may be handed out.
func (a announcement) apply(e *nearEntry, capWindow time.Duration) (*nearEntry, bool) {
	next := *e
	switch {
	case a.version == e.tok.Version && a.fetchedAt.Equal(e.tok.FetchedAt):
		next.tok.UsableUntil = a.usableUntil
		if next.tok.RefreshAt.After(a.usableUntil) {
			next.tok.RefreshAt = a.usableUntil
		}
	case a.version < e.tok.Version && a.fetchedAt.Before(e.tok.FetchedAt):
		return e, false
	default:
		next.loadedAt = time.Time{}
		if limit := a.fetchedAt.Add(capWindow); limit.Before(next.tok.UsableUntil) {
			next.tok.UsableUntil = limit
		}
	}
	return &next, true
}

func (st *appState) changedChan() <-chan struct{} {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.changed
}

func (st *appState) notify() {
	st.mu.Lock()
	close(st.changed)
	st.changed = make(chan struct{})
	st.mu.Unlock()
}

// Stats are the cache's counters since New.
type Stats struct {
	NearHits             int64 // answered from memory
	RedisHits            int64 // answered from Redis
	Misses               int64 // no usable token: waited for a fetch
	Fetches              int64 // upstream fetches this process sent
	FetchErrors          int64 // of which failed
	Refused              int64 // fetched tokens whose write lost the compare-and-set
	LockWaits            int64 // waits for another holder's fetch
	ServedStale          int64 // answered from memory during a Redis error
	BackgroundRefreshes  int64 // refreshes started while serving a due token
	Invalidations        int64 // passive refreshes that fetched or waited
	InvalidationsIgnored int64 // reports of a token already replaced
	CorruptRecords       int64 // corrupt records read from Redis
}

type counters struct {
	nearHits, redisHits, misses, fetches, fetchErrors, refused, lockWaits,
	servedStale, background, invalidations, invalidationsIgnored, corrupt atomic.Int64
}

// Stats returns a snapshot of the counters.
func (c *Cache) Stats() Stats {
	s := &c.stats
	return Stats{
		NearHits: s.nearHits.Load(), RedisHits: s.redisHits.Load(), Misses: s.misses.Load(),
		Fetches: s.fetches.Load(), FetchErrors: s.fetchErrors.Load(), Refused: s.refused.Load(),
		LockWaits: s.lockWaits.Load(), ServedStale: s.servedStale.Load(), BackgroundRefreshes: s.background.Load(),
		Invalidations: s.invalidations.Load(), InvalidationsIgnored: s.invalidationsIgnored.Load(),
		CorruptRecords: s.corrupt.Load(),
	}
}
