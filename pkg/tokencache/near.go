package tokencache

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// nearCopy is what one process holds of one app's record: the hit path reads
// cur with one atomic load; every writer (a read of Redis, our own write, an
// announcement, a subscription gap) takes mu, so no writer can undo what a
// newer one stored.
//
// The copy obeys one rule: it is served at most until its serveUntil, the
// earliest of
//   - its usable end, as Redis last said;
//   - the last time Redis confirmed it, plus the horizon (the overlap less
//     the margin): a fetch that could kill it was sent after that
//     confirmation (a classic fetch caps the stored token before it is
//     sent), so the token lives at least the overlap after it;
//   - for a copy superseded by an announced newer token, that token's fetch
//     plus the cap window.
//
// A copy is current while nothing says Redis moved on: current copies are
// served at once, and one background read per app revalidates them before
// near max age. A copy that is not current (superseded, missed messages,
// record gone or corrupt) is served only when Redis cannot be read.
type nearCopy struct {
	cur          atomic.Pointer[nearEntry]
	revalidating atomic.Bool

	mu   sync.Mutex
	rev  int64  // the newest rev seen for the app: read, written or announced
	gen  uint64 // bumped by every applied announcement and every gap
	dead string // a token reported and verified dead: never served again
	// newer is the last applied announcement, for Known: while it names a
	// rev newer than the copy's, it is the newest the process knows.
	newer struct{ rev, version, usableUntil, fetchedAt int64 } // times in Unix ms
}

type nearEntry struct {
	tok          Token
	current      bool
	confirmedAt  time.Time // when Redis (or WeChat) last vouched for tok
	revalidateAt time.Time // a current copy is re-read in the background from then on
	serveUntil   time.Time
}

// generation is taken before a read of Redis; adopt uses it to tell whether
// an announcement arrived while the read was under way.
func (n *nearCopy) generation() uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.gen
}

// adopt takes tok, as Redis held it at confirmedAt (when the read or write
// that returned it was sent). A read is the truth about Redis unless an
// announcement of a newer rev arrived while it was under way: then the read
// may predate that change and is dropped (adopt returns false). A rev lower
// than one seen is otherwise believed: Redis lost its data.
func (n *nearCopy) adopt(tok Token, confirmedAt time.Time, gen uint64, o *options) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.gen != gen && tok.Rev < n.rev {
		return false
	}
	n.rev = tok.Rev
	// A decoded token shares the memory of the whole record it was read
	// from; the copy is kept for the app's life, so it keeps only the token.
	tok.Value = strings.Clone(tok.Value)
	e := &nearEntry{tok: tok, current: o.NearMaxAge > 0, confirmedAt: confirmedAt,
		revalidateAt: confirmedAt.Add(o.NearMaxAge * 3 / 4), serveUntil: earliest(tok.UsableUntil, confirmedAt.Add(o.horizon()))}
	if tok.Value == n.dead {
		e.current, e.serveUntil = false, time.Time{}
	} else {
		n.dead = ""
	}
	n.cur.Store(e)
	return true
}

// keep holds a token that only WeChat vouched for (a stable fetch while
// Redis was down): served as a last good copy, never as a hit.
func (n *nearCopy) keep(tok Token, fetchedAt time.Time, o *options) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cur.Store(&nearEntry{tok: tok, confirmedAt: fetchedAt, serveUntil: earliest(tok.UsableUntil, fetchedAt.Add(o.horizon()))})
}

// announced applies a change message. Messages of a rev already seen are
// older than, or the same as, what we hold.
func (n *nearCopy) announced(a announcement, o *options) (applied bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.gen++
	if a.rev <= n.rev {
		return false
	}
	n.rev = a.rev
	n.newer.rev, n.newer.version = a.rev, a.version
	n.newer.usableUntil, n.newer.fetchedAt = a.usableUntil.UnixMilli(), a.fetchedAt.UnixMilli()
	e := n.cur.Load()
	if e == nil {
		return true
	}
	next := *e
	if a.version == e.tok.Version && a.fetchedAt.Equal(e.tok.FetchedAt) {
		// The same token, capped or its cap lifted.
		next.tok.Rev = a.rev
		next.tok.UsableUntil = a.usableUntil
		if next.tok.RefreshAt.After(a.usableUntil) {
			next.tok.RefreshAt = a.usableUntil
		}
		next.serveUntil = earliest(a.usableUntil, e.confirmedAt.Add(o.horizon()))
		if e.tok.Value == n.dead {
			next.serveUntil = time.Time{}
		}
	} else {
		// A newer token: ours may be killed from that fetch on.
		next.current = false
		next.serveUntil = earliest(e.serveUntil, a.fetchedAt.Add(o.capWindow()))
	}
	n.cur.Store(&next)
	return true
}

// stale marks the copy "confirm before use": messages may have been missed
// (a resubscription), or Redis holds no valid record for it.
func (n *nearCopy) stale(bumpGen bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if bumpGen {
		n.gen++
	}
	if e := n.cur.Load(); e != nil && e.current {
		next := *e
		next.current = false
		n.cur.Store(&next)
	}
}

// retryLater moves the next background read of the copy to at.
func (n *nearCopy) retryLater(at time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if e := n.cur.Load(); e != nil && e.revalidateAt.Before(at) {
		next := *e
		next.revalidateAt = at
		n.cur.Store(&next)
	}
}

// kill records that tok was verified dead at WeChat: it is never served
// again, whatever Redis still holds.
func (n *nearCopy) kill(tok string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.dead = tok
	if e := n.cur.Load(); e != nil && e.tok.Value == tok {
		next := *e
		next.current, next.serveUntil = false, time.Time{}
		n.cur.Store(&next)
	}
}

// isDead reports whether tok was verified dead.
func (n *nearCopy) isDead(tok string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return tok != "" && tok == n.dead
}

// lastGood is the copy if it may still be served at now, current or not.
func (n *nearCopy) lastGood(now time.Time) (Token, bool) {
	if e := n.cur.Load(); e != nil && now.Before(e.serveUntil) {
		return e.tok, true
	}
	return Token{}, false
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
