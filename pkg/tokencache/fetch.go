package tokencache

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"

	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/pkg/lock"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// A condition under which a fetch is still needed; checked again inside the
// lock, so a process that waited never fetches what another just stored.
type condition string

const (
	condUsable  condition = "usable" // no usable token (a miss)
	condDue     condition = "due"    // none, or due for refresh
	condReplace condition = "bad"    // none, or the current one is the reported bad token
)

// satisfied reports whether tok makes a fetch under cond unnecessary.
func satisfied(tok Token, cond condition, bad string, now time.Time) bool {
	if !now.Before(tok.UsableUntil) {
		return false
	}
	switch cond {
	case condDue:
		return now.Before(tok.RefreshAt)
	case condReplace:
		return tok.Value != bad
	}
	return true
}

// maxFleetAttempts bounds how often one call goes round "wait for the
// holder, take the lock, find the write refused".
const maxFleetAttempts = 8

// fetch gets a token satisfying cond, fetching it at most once per process
// (single-flight) and once per fleet (lock).
func (c *Cache) fetch(ctx context.Context, st *appState, cond condition, bad string) (Token, error) {
	return c.flightDo(ctx, st.id+"\x00"+string(cond)+"\x00"+bad, 3*c.opt.LockTTL, func(fctx context.Context) (Token, error) {
		return c.fetchFleet(fctx, st, cond, bad)
	})
}

// flightDo runs fn once for every caller of the same key in this process.
// The flight serves every caller that joins it, so it must not die with the
// first caller's context: it is bounded by limit, ended by Close, and Close
// waits for it. Each caller waits only as long as its own context allows.
func (c *Cache) flightDo(ctx context.Context, key string, limit time.Duration, fn func(context.Context) (Token, error)) (Token, error) {
	ch := c.flight.DoChan(key, func() (any, error) {
		if !c.track() {
			return Token{}, ErrClosed
		}
		defer c.wg.Done()
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), limit)
		defer cancel()
		stop := context.AfterFunc(c.ctx, cancel)
		defer stop()
		return fn(fctx)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return Token{}, r.Err
		}
		return r.Val.(Token), nil
	case <-ctx.Done():
		return Token{}, ctx.Err()
	}
}

func (c *Cache) fetchFleet(ctx context.Context, st *appState, cond condition, bad string) (Token, error) {
	for attempt := 0; attempt < maxFleetAttempts; attempt++ {
		if err := c.held(st); err != nil {
			return Token{}, err
		}
		// Take the change channel before looking, so a change that lands
		// between the look and the wait still wakes us.
		changed := st.changedChan()
		lk, err := c.locker.TryLock(ctx, st.keys.lock, c.opt.LockTTL)
		if errors.Is(err, lock.ErrNotAcquired) {
			tok, ok, err := c.waitForHolder(ctx, st, changed, cond, bad)
			if err != nil && ctx.Err() == nil {
				return c.redisDown(ctx, st, err)
			}
			if ok || err != nil {
				return tok, err
			}
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return Token{}, ctx.Err()
			}
			return c.redisDown(ctx, st, err)
		}
		tok, err := c.fetchLocked(ctx, st, cond, bad)
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		if uerr := lk.Unlock(uctx); uerr != nil {
			c.log.Warn("tokencache: releasing the fetch lock failed; it expires by itself", "app", st.id, "err", uerr)
		} else if err != nil {
			// Nothing was stored, so nothing was announced: wake the
			// processes waiting for our fetch, or they sleep out the lock.
			_ = c.client.Publish(uctx, c.channel, wakeMessage(st.id)).Err()
		}
		cancel()
		if !errors.Is(err, errNotStored) {
			return tok, err
		}
	}
	return Token{}, fmt.Errorf("tokencache: app %q: no usable token after %d rounds of waiting for another holder or having our write refused", st.id, maxFleetAttempts)
}

// errNotStored: our fetch was not stored and nothing usable is there.
var errNotStored = errors.New("fetched token was not stored")

// waitForHolder waits until another process's fetch is announced or its
// lock runs out, then looks again. ok reports a token that satisfies cond.
func (c *Cache) waitForHolder(ctx context.Context, st *appState, changed <-chan struct{}, cond condition, bad string) (Token, bool, error) {
	c.stats.lockWaits.Add(1)
	// Look once before waiting: the holder may have stored its token and
	// announced it before our TryLock failed (it releases the lock only
	// after announcing), and that announcement will not come again.
	if tok, ok, err := c.lookAgain(ctx, st, cond, bad); ok || err != nil {
		return tok, ok, err
	}
	start := time.Now()
	wait := c.opt.LockTTL
	if ttl, err := c.client.PTTL(ctx, st.keys.lock).Result(); err == nil && ttl > 0 && ttl < wait {
		wait = ttl + 10*time.Millisecond
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-changed:
	case <-timer.C:
	case <-ctx.Done():
		return Token{}, false, ctx.Err()
	}
	if h := c.opt.hooks.OnLockWait; h != nil {
		h(st.id, time.Since(start))
	}
	return c.lookAgain(ctx, st, cond, bad)
}

func (c *Cache) lookAgain(ctx context.Context, st *appState, cond condition, bad string) (Token, bool, error) {
	tok, found, err := c.read(ctx, st)
	if err != nil && !errors.Is(err, ErrCorruptRecord) {
		return Token{}, false, err
	}
	if found && satisfied(tok, cond, bad, c.opt.now()) {
		return tok, true, nil
	}
	return Token{}, false, nil
}

// attempt is one fenced upstream fetch, made while holding the app's lock:
// begin (the second check, the budget, the intent and the cap), send, then
// commit or abort.
type attempt struct {
	c        *Cache
	st       *appState
	cond     condition
	bad      string
	id       string
	deadline time.Time // our intent's end: the fetch cannot mint after it
	prev     Token     // what beginFetch found (zero if nothing valid)
	beginCap string    // the usable_until beginFetch capped prev to, or ""
	counter  string    // the version counter as the fetch began
	sendAt   time.Time
}

func (c *Cache) fetchLocked(ctx context.Context, st *appState, cond condition, bad string) (Token, error) {
	if err := c.fleetHeld(ctx, st); err != nil {
		return Token{}, err
	}
	a := &attempt{c: c, st: st, cond: cond, bad: bad, id: newFetchID()}
	if tok, done, err := a.begin(ctx); done {
		return tok, err
	}
	up, err := a.send(ctx)
	if err != nil {
		return Token{}, err
	}
	return a.commit(ctx, up)
}

// begin runs beginFetch. done is true when the attempt ends there: a token
// stored meanwhile makes the fetch unnecessary, or it may not be sent.
func (a *attempt) begin(ctx context.Context) (Token, bool, error) {
	c, st := a.c, a.st
	gen := st.near.generation()
	now := c.opt.now()
	a.deadline = now.Add(c.opt.FetchTimeout)
	capUntil, capRefresh := c.capAt(now)
	budget := c.opt.DailyBudget
	res, err := beginFetch.run(ctx, c.client,
		[]string{st.keys.record, st.keys.intents, st.keys.budget + wechat.QuotaDay(now), st.keys.rev, st.keys.passive, st.keys.version},
		beginArgs{Now: now.UnixMilli(), ID: a.id, Deadline: a.deadline.UnixMilli(), CapUntil: capUntil, CapRefresh: capRefresh,
			Budget: budget, BadBudget: budget - c.opt.reserve(), BudgetTTL: (48 * time.Hour).Milliseconds(),
			BadLimit: c.opt.PassiveLimit, BadWindow: c.opt.PassiveWindow.Milliseconds(),
			Classic: st.mode == wechat.Classic, Cond: string(a.cond), Bad: a.bad, Channel: c.channel, App: st.id,
			Window: c.opt.capWindow().Milliseconds()},
	).StringSlice()
	if err != nil {
		tok, err := c.redisDown(ctx, st, fmt.Errorf("tokencache: begin fetch: %w", err))
		return tok, true, err
	}
	switch res[0] {
	case "fresh":
		// The second check: while we waited for the lock, another process
		// stored a token that makes this fetch unnecessary. Fetching anyway
		// would invalidate it (classic) and waste quota.
		tok, err := DecodeRecord(st.keys.record, res[1])
		if err != nil {
			return Token{}, true, err
		}
		st.near.adopt(tok, now, gen, &c.opt)
		return tok, true, nil
	case "budget":
		err := fmt.Errorf("%w: app %q has used %s of %d fetches today (Beijing time)", ErrBudgetExceeded, st.id, res[1], budget)
		if a.cond == condReplace && c.opt.reserve() > 0 {
			err = fmt.Errorf("%w: app %q has used %s of %d fetches today (Beijing time); the last %d are kept for scheduled refreshes",
				ErrBudgetExceeded, st.id, res[1], budget, c.opt.reserve())
		} else {
			c.hold(st, err, now)
		}
		c.emit(st, "budget", 0, err)
		c.log.Error("tokencache: daily fetch budget exceeded; not fetching", "app", st.id, "budget", budget, "passive", a.cond == condReplace)
		return Token{}, true, err
	case "limited":
		err := fmt.Errorf("%w: app %q: %d passive refreshes in the last %v, fleet-wide", ErrPassiveRefreshLimited, st.id, c.opt.PassiveLimit, c.opt.PassiveWindow)
		c.emit(st, "limited", 0, err)
		c.log.Warn("tokencache: passive refresh rate limit reached; not fetching", "app", st.id, "limit", c.opt.PassiveLimit, "window", c.opt.PassiveWindow)
		return Token{}, true, err
	}
	a.prev, _ = DecodeRecord(st.keys.record, res[2]) // zero Token if none or corrupt
	a.counter = res[3]
	// What beginFetch's cap set prev's usable end to (it never caps below
	// prev's own fetch plus the window), so abort can tell its own cap.
	if cu := max(capUntil, a.prev.FetchedAt.Add(c.opt.capWindow()).UnixMilli()); st.mode == wechat.Classic && a.prev.Version > 0 &&
		cu < a.prev.UsableUntil.UnixMilli() && a.prev.FetchedAt.Before(a.deadline) {
		a.beginCap = strconv.FormatInt(cu, 10)
	}
	return Token{}, false, nil
}

// send fetches from upstream, unless our intent ran out before we could.
func (a *attempt) send(ctx context.Context) (wechat.Token, error) {
	c, st := a.c, a.st
	a.sendAt = c.opt.now()
	if !a.sendAt.Before(a.deadline) {
		// Paused past our intent: another process may be fetching now, and
		// a fetch sent this late could invalidate its token unseen.
		a.abort(false)
		return wechat.Token{}, fmt.Errorf("tokencache: app %q: fetch deadline passed before sending; not sent", st.id)
	}
	fctx, cancel := context.WithTimeout(ctx, a.deadline.Sub(a.sendAt))
	c.stats.fetches.Add(1)
	up, err := c.src.Fetch(fctx, st.id)
	cancel()
	if err == nil {
		err = checkUpstream(up, st.mode)
	}
	if err != nil {
		c.stats.fetchErrors.Add(1)
		minted := mayHaveMinted(err)
		a.abort(minted)
		c.hold(st, err, c.opt.now())
		c.setFleetHold(ctx, st, err)
		c.emit(st, wechat.ClassName(err), c.opt.now().Sub(a.sendAt), err)
		c.log.Warn("tokencache: upstream fetch failed", "app", st.id, "err", err, "may_have_minted", minted)
		return wechat.Token{}, fmt.Errorf("tokencache: app %q: fetch: %w", st.id, err)
	}
	return up, nil
}

// mayHaveMinted reports whether a failed fetch may have reached WeChat and
// minted a token: anything but an errcode reply or a request surely not sent.
func mayHaveMinted(err error) bool {
	var werr *wechat.Error
	var cerr *wechat.ConfigError
	var rerr *wechat.RequestError
	switch {
	case errors.As(err, &werr), errors.As(err, &cerr):
		return false
	case errors.As(err, &rerr):
		return rerr.Sent
	}
	return true
}

// commit stores the fetched token with commitFetch.
func (a *attempt) commit(ctx context.Context, up wechat.Token) (Token, error) {
	c, st := a.c, a.st
	took := c.opt.now().Sub(a.sendAt)
	// A token's life counts from when we sent the request, on our clock:
	// never later than WeChat's count.
	tok := c.newToken(st.id, up, a.sendAt)
	sendCapUntil, sendCapRefresh := c.capAt(a.sendAt)
	contended := tok
	contended.UsableUntil = earliest(contended.UsableUntil, time.UnixMilli(sendCapUntil))
	contended.RefreshAt = earliest(earliest(contended.RefreshAt, time.UnixMilli(sendCapRefresh)), contended.UsableUntil)
	ms := func(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }
	gen := st.near.generation()
	now := c.opt.now()
	out, err := commitFetch.run(ctx, c.client,
		[]string{st.keys.record, st.keys.intents, st.keys.version, st.keys.rev},
		commitArgs{Now: now.UnixMilli(), ID: a.id, Expected: a.counter,
			Token: tok.Value, Usable: ms(tok.UsableUntil), Refresh: ms(tok.RefreshAt),
			CUsable: ms(contended.UsableUntil), CRefresh: ms(contended.RefreshAt),
			Expires: ms(tok.ExpiresAt), Fetched: ms(tok.FetchedAt), Issued: strconv.FormatInt(unixMilliOrZero(tok.IssuedAt), 10),
			Slack: issueOrderSlack.Milliseconds(), Classic: st.mode == wechat.Classic,
			CapUntil: sendCapUntil, CapRefresh: sendCapRefresh, Deadline: a.deadline.UnixMilli(),
			Window: c.opt.capWindow().Milliseconds(), Channel: c.channel, App: st.id},
	).Slice()
	if err != nil {
		// We cannot know whether the write happened. If it did not, the
		// stored token may have been invalidated by our fetch: its cap from
		// beginFetch still bounds it. Ours is the newest token WeChat
		// knows of, so this process keeps it as its last good copy (a
		// contended life: another fetch may be in flight).
		st.near.keep(contended, a.sendAt, &c.opt)
		c.emit(st, "error", took, err)
		return Token{}, fmt.Errorf("tokencache: app %q: store fetched token: %w", st.id, err)
	}
	c.clearHold(st)
	switch out[0] {
	case "stored":
		tok.Version, tok.Rev = out[1].(int64), out[2].(int64)
		if out[3].(int64) == 1 {
			tok.UsableUntil, tok.RefreshAt = contended.UsableUntil, contended.RefreshAt
		}
		st.near.adopt(tok, a.sendAt, gen, &c.opt)
		c.emit(st, "ok", took, nil)
		msg := "tokencache: fetched and stored a new token"
		if tok.Value == a.prev.Value {
			// A stable refresh while more than the overlap remains returns the
			// same token with a shorter expires_in; the next try gets a new one.
			msg = "tokencache: refreshed; upstream returned the same token"
		}
		c.log.Info(msg, "app", st.id, "token", wechat.Fingerprint(tok.Value),
			"version", tok.Version, "expires_in", up.ExpiresIn, "contended", out[3].(int64) == 1)
		return tok, nil
	default: // "refused" or "stale"
		c.stats.refused.Add(1)
		c.emit(st, "refused", took, nil)
		c.log.Warn("tokencache: fetched token not stored; the stored one was capped", "app", st.id, "outcome", out[0],
			"token", wechat.Fingerprint(tok.Value))
		cur, found, rerr := c.read(ctx, st)
		// Any live token serves the caller now (a due one included: its
		// refresh is someone's job again), but never the one reported bad.
		want := condUsable
		if a.cond == condReplace {
			want = condReplace
		}
		if rerr == nil && found && satisfied(cur, want, a.bad, c.opt.now()) {
			return cur, nil
		}
		return Token{}, errNotStored
	}
}

// abort ends an attempt that stored nothing. It runs on its own context:
// the caller's, or the cache's after Close, may be gone, and the intent
// must not stay registered (other writers would store capped tokens).
func (a *attempt) abort(mayHaveSent bool) {
	c, st := a.c, a.st
	at := a.sendAt
	if at.IsZero() {
		at = c.opt.now()
	}
	capUntil, capRefresh := c.capAt(at)
	ctx, cancel := context.WithTimeout(context.Background(), c.opt.FetchTimeout)
	defer cancel()
	keys := []string{st.keys.record, st.keys.intents, st.keys.rev}
	if !mayHaveSent {
		// Nothing reached WeChat: the fetch is not charged to the budget.
		_ = c.client.Decr(ctx, st.keys.budget+wechat.QuotaDay(at)).Err()
	}
	err := abortFetch.run(ctx, c.client, keys, abortArgs{Now: c.opt.now().UnixMilli(), ID: a.id, MayHaveSent: mayHaveSent,
		Classic: st.mode == wechat.Classic, CapUntil: capUntil, CapRefresh: capRefresh,
		Expected: strconv.FormatInt(a.prev.Version, 10), BeginCap: a.beginCap,
		PrevUsable: strconv.FormatInt(a.prev.UsableUntil.UnixMilli(), 10), PrevRefresh: strconv.FormatInt(a.prev.RefreshAt.UnixMilli(), 10),
		Deadline: a.deadline.UnixMilli(), Window: c.opt.capWindow().Milliseconds(), Channel: c.channel, App: st.id}).Err()
	if err != nil && !errors.Is(err, redis.Nil) {
		c.log.Warn("tokencache: could not record the end of a failed fetch", "app", st.id, "err", err)
	}
}

// fetchUnlocked fetches a stable token while Redis is down and keeps it in
// memory only. Stable fetches cannot invalidate anyone's token.
func (c *Cache) fetchUnlocked(ctx context.Context, st *appState) (Token, error) {
	if err := c.held(st); err != nil {
		return Token{}, err
	}
	return c.flightDo(ctx, st.id+"\x00unlocked", c.opt.FetchTimeout, func(fctx context.Context) (Token, error) {
		sendAt := c.opt.now()
		c.stats.fetches.Add(1)
		up, err := c.src.Fetch(fctx, st.id)
		if err == nil {
			err = checkUpstream(up, st.mode)
		}
		if err != nil {
			c.stats.fetchErrors.Add(1)
			c.hold(st, err, c.opt.now())
			c.emit(st, wechat.ClassName(err), c.opt.now().Sub(sendAt), err)
			return Token{}, fmt.Errorf("tokencache: app %q: redis unavailable and stable fetch failed: %w", st.id, err)
		}
		fetchedAt := sendAt
		tok := c.newToken(st.id, up, fetchedAt)
		st.near.keep(tok, fetchedAt, &c.opt)
		c.emit(st, "ok", c.opt.now().Sub(sendAt), nil)
		return tok, nil
	})
}

// refreshInBackground starts one refresh for st unless one is running or
// fetching is held. Readers keep getting the current token meanwhile.
func (c *Cache) refreshInBackground(st *appState, now time.Time) {
	if now.UnixMilli() < st.holdUntil.Load() || st.refreshing.Load() || !st.refreshing.CompareAndSwap(false, true) {
		return
	}
	if !c.track() {
		st.refreshing.Store(false)
		return
	}
	c.stats.background.Add(1)
	go func() {
		defer c.wg.Done()
		defer st.refreshing.Store(false)
		ctx, cancel := context.WithTimeout(c.ctx, 3*c.opt.LockTTL)
		defer cancel()
		if _, err := c.fetch(ctx, st, condDue, ""); err != nil && ctx.Err() == nil {
			c.log.Warn("tokencache: background refresh failed; serving the current token", "app", st.id, "err", err)
		}
	}()
}

// capAt is the latest a token that a fetch sent at t may invalidate can
// still be handed out, and when its refresh becomes due.
func (c *Cache) capAt(t time.Time) (until, refresh int64) {
	w := c.opt.capWindow()
	return t.Add(w).UnixMilli(), t.Add(w / 2).UnixMilli()
}

// hold suspends fetching for st after err: until Beijing midnight for a
// quota error, for the configured hold after a configuration error, and an
// exponential backoff with jitter after anything else.
func (c *Cache) hold(st *appState, err error, now time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	var until time.Time
	var ending *ticketEndingError
	switch {
	case errors.As(err, &ending) && ending.end.After(now):
		// WeChat issues the next ticket once this one has expired: asking
		// before then only gets it again.
		until = ending.end
	case errors.Is(err, wechat.ErrQuota):
		until = wechat.NextQuotaReset(now)
	case errors.Is(err, wechat.ErrConfig):
		until = now.Add(c.opt.ConfigHold)
	case errors.Is(err, ErrBudgetExceeded):
		until = now.Add(time.Minute)
	case wechat.MinuteLimited(err):
		until = now.Add(time.Minute) // WeChat's minute limit
	default:
		st.failures++
		backoff := c.opt.BackoffBase << min(st.failures-1, 20)
		if backoff > c.opt.BackoffMax || backoff <= 0 {
			backoff = c.opt.BackoffMax
		}
		until = now.Add(backoff/2 + rand.N(backoff/2+1))
	}
	st.holdErr = err
	st.holdUntil.Store(until.UnixMilli())
}

func (c *Cache) clearHold(st *appState) {
	st.mu.Lock()
	st.failures, st.holdErr = 0, nil
	st.holdUntil.Store(0)
	st.mu.Unlock()
}

func (c *Cache) held(st *appState) error {
	ms := st.holdUntil.Load()
	if ms == 0 || c.opt.now().UnixMilli() >= ms {
		return nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.holdErr == nil {
		return nil
	}
	return &HeldError{AppID: st.id, Until: time.UnixMilli(ms), Err: st.holdErr}
}

func (c *Cache) emit(st *appState, result string, d time.Duration, err error) {
	if h := c.opt.hooks.OnFetch; h != nil {
		h(FetchEvent{AppID: st.id, Kind: c.opt.kind, Result: result, Duration: d, Err: err})
	}
}

// checkUpstream refuses what no Source should return; a bad token must never
// reach Redis. What the record's grammar cannot hold is a malformed reply
// of the mode's endpoint (*wechat.ReplyError: transient, and a classic fetch
// may have minted), like any other reply the client refuses. The reasons
// give offsets and byte values, never the token.
func checkUpstream(t wechat.Token, mode wechat.Mode) error {
	endpoint := wechat.EndpointToken
	if mode == wechat.Stable {
		endpoint = wechat.EndpointStableToken
	}
	malformed := func(format string, args ...any) error {
		return &wechat.ReplyError{Endpoint: endpoint, Reason: "source returned " + fmt.Sprintf(format, args...)}
	}
	if t.Value == "" || len(t.Value) > maxTokenLen {
		return malformed("an access_token of %d bytes (want 1 to %d)", len(t.Value), maxTokenLen)
	}
	if i := badTokenByte(t.Value); i >= 0 {
		if c := t.Value[i]; c == '|' {
			return malformed("an access_token with a '|' at offset %d, which the token record cannot hold", i)
		} else {
			return malformed("an access_token with byte 0x%02x at offset %d, outside printable ASCII", c, i)
		}
	}
	if t.ExpiresIn <= 0 || t.ExpiresIn > maxTokenLife {
		return malformed("expires_in %v (want more than 0, at most %v)", t.ExpiresIn, maxTokenLife)
	}
	return nil
}

// newToken is the Token of app for a fetch sent at fetchedAt, with every time at
// the millisecond precision of the Redis record, so the copy a writer keeps
// is identical to what its readers decode and its announcement names.
func (c *Cache) newToken(app string, up wechat.Token, fetchedAt time.Time) Token {
	ms := func(t time.Time) time.Time { return time.UnixMilli(t.UnixMilli()) }
	refreshAt, usable := c.opt.Lifetimes(fetchedAt, up.ExpiresIn)
	if c.opt.spread {
		refreshAt = spreadRefresh(app, fetchedAt, refreshAt)
	}
	tok := Token{Value: up.Value, UsableUntil: ms(usable), RefreshAt: ms(refreshAt), ExpiresAt: ms(fetchedAt.Add(up.ExpiresIn)), FetchedAt: ms(fetchedAt)}
	if !up.IssuedAt.IsZero() {
		tok.IssuedAt = ms(up.IssuedAt)
	}
	return tok
}

// issueOrderSlack is how far apart two replies' Date headers (WeChat's
// clock, whole seconds) must be to prove which token was minted last: one
// second of resolution, and one for the time between mint and reply and
// the spread of WeChat's servers.
const issueOrderSlack = 2 * time.Second

func newFetchID() string {
	var b [8]byte
	_, _ = crand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// The fleet-wide hold. A configuration error (WeChat refused the secret,
// the IP is not whitelisted) will not go away by itself, and every fetch
// that meets it costs a call of the app's daily quota; each process holding
// the app on its own would cost one failing fetch per process per hold.
// The process that met it (under the fetch lock) records it in the app's
// hold key for ConfigHold; a lock holder reads that key before fetching and
// holds the app too, so the fleet sends one failing fetch per ConfigHold.
// Reading fails open: if Redis cannot say, the fetch goes ahead (begin
// meets the same Redis anyway).

// setFleetHold records err as the fleet's hold if WeChat answered it with a
// configuration errcode. The record holds the hold's end (Unix ms, on the
// writer's clock, as every time in a record is), errcode, endpoint and the
// cleaned errmsg (from which the client removed the secret); the key's TTL
// only cleans up.
func (c *Cache) setFleetHold(ctx context.Context, st *appState, err error) {
	var werr *wechat.Error
	if !errors.As(err, &werr) || !errors.Is(werr, wechat.ErrConfig) {
		return
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	until := c.opt.now().Add(c.opt.ConfigHold).UnixMilli()
	val := strconv.FormatInt(until, 10) + "|" + strconv.Itoa(werr.Code) + "|" + werr.Endpoint + "|" + werr.Message
	if serr := c.client.Set(sctx, st.keys.hold, val, c.opt.ConfigHold).Err(); serr != nil {
		c.log.Warn("tokencache: recording the fleet-wide configuration hold failed; other processes may try once each", "app", st.id, "err", serr)
	}
}

// fleetHeld returns a *HeldError if the fleet holds the app, after holding
// it in this process until the fleet's hold ends.
func (c *Cache) fleetHeld(ctx context.Context, st *appState) error {
	val, err := c.client.Get(ctx, st.keys.hold).Result()
	if err != nil {
		return nil // no hold (redis.Nil), or Redis cannot say: fail open
	}
	endMs, rest, ok := strings.Cut(val, "|")
	code, rest, ok2 := strings.Cut(rest, "|")
	endpoint, msg, ok3 := strings.Cut(rest, "|")
	end, err1 := strconv.ParseInt(endMs, 10, 64)
	n, err2 := strconv.Atoi(code)
	now := c.opt.now()
	if !ok || !ok2 || !ok3 || err1 != nil || err2 != nil || end <= now.UnixMilli() {
		return nil // not ours, or over: ignored
	}
	werr := &wechat.Error{Code: n, Endpoint: endpoint, Message: msg}
	// Never longer than one hold from now: a writer's clock far ahead must
	// not hold the fleet for longer than the rule says.
	until := time.UnixMilli(min(end, now.Add(c.opt.ConfigHold).UnixMilli()))
	st.mu.Lock()
	st.holdErr = werr
	st.holdUntil.Store(until.UnixMilli())
	st.mu.Unlock()
	return &HeldError{AppID: st.id, Until: until, Err: werr}
}

// LiftHold ends appID's hold, in this process and fleet-wide, whatever its
// cause, so the next Token or Refresh may fetch: the operator changed what
// the hold was waiting for (a configuration reload with a new secret, or a
// whitelist fixed). Other processes' own holds end by themselves (at most
// ConfigHold later); the leader, whose scheduler refreshes, is the one that
// matters. Unknown or invalid appids are ignored.
func (c *Cache) LiftHold(ctx context.Context, appID string) error {
	st, err := c.app(appID)
	if err != nil {
		return nil
	}
	c.clearHold(st)
	if err := c.client.Del(ctx, st.keys.hold).Err(); err != nil {
		return fmt.Errorf("tokencache: app %q: lifting the fleet-wide hold: %w", appID, err)
	}
	return nil
}
