package tokencache

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/pkg/lock"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// grantAll is a lock that every caller gets, as when a holder was paused
// past the lock's expiry and another took it: two holders at once.
type grantAll struct{}

func (grantAll) TryLock(context.Context, string, time.Duration) (lock.Lock, error) {
	return grantedLock{}, nil
}

type grantedLock struct{}

func (grantedLock) Unlock(context.Context) error { return nil }
func (grantedLock) Until() time.Time             { return time.Time{} }

// errLostReply is what the wechat client returns when the request went out and
// no answer came back.
var errLostReply = fmt.Errorf("connection closed: %w", errors.Join(wechat.ErrTransient, wechat.ErrOutcomeUnknown))

// capWindow of the default options: overlap 5m - margin 1m - near max age 10s.
const defaultCapWindow = 230 * time.Second

func TestLostReplyCapsTheStoredToken(t *testing.T) {
	f := newFixture(t)
	first := mustToken(t, f.cache, "wx1")
	f.src.QueueErr(errLostReply)
	_, err := f.cache.Invalidate(context.Background(), "wx1", first.Value)
	if !errors.Is(err, wechat.ErrOutcomeUnknown) {
		t.Fatalf("err = %v", err)
	}
	// The lost fetch may have minted a token that kills first in 5 minutes:
	// first must leave Redis, and every near cache, before that.
	rec, ttl := f.record(t, "wx1")
	if rec.Value != first.Value || !rec.UsableUntil.Equal(t0.Add(defaultCapWindow)) || ttl != defaultCapWindow {
		t.Fatalf("record %v ttl %v; want %s capped to now+%v", rec, ttl, first, defaultCapWindow)
	}
	if !rec.RefreshAt.Before(rec.UsableUntil) {
		t.Fatalf("refresh at %v not before usable end %v", rec.RefreshAt, rec.UsableUntil)
	}
}

func TestErrcodeReplyLiftsTheCap(t *testing.T) {
	f := newFixture(t)
	first := mustToken(t, f.cache, "wx1")
	// WeChat answered 45009: nothing was minted, so first lives on in full.
	f.src.QueueErr(&wechat.Error{Code: 45009, Endpoint: wechat.EndpointToken})
	if _, err := f.cache.Invalidate(context.Background(), "wx1", first.Value); !errors.Is(err, wechat.ErrQuota) {
		t.Fatalf("err = %v", err)
	}
	rec, ttl := f.record(t, "wx1")
	if !rec.UsableUntil.Equal(first.UsableUntil) || ttl != 7140*time.Second {
		t.Fatalf("record usable %v ttl %v; want the original %v", rec.UsableUntil, ttl, first.UsableUntil)
	}
}

func TestLateWriterIsRefusedAndCapsTheNewerToken(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stall  time.Duration // how long A stalls after sending, before B fetches
		capped bool
	}{
		// A's fetch (deadline: its send + the 10 s fetch timeout) may have
		// minted after B's: B's token is capped, but never below its own
		// fetch + the cap window.
		{"B fetched within A's deadline", 5 * time.Second, true},
		// A's fetch cannot have minted after its deadline; B's token, fetched
		// later, was minted after A's: nothing to cap.
		{"B fetched after A's deadline", time.Minute, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, WithLocker(grantAll{}))
			other := f.newCache(t, WithLocker(grantAll{}))
			first := mustToken(t, f.cache, "wx1")

			// A fetches and stalls before writing; its lock "expires".
			release := f.stallFetch("wx1", first.Value)
			f.clock.Advance(tc.stall)

			// B, holding the lock now, fetches and stores.
			b, err := other.Invalidate(context.Background(), "wx1", first.Value)
			if err != nil {
				t.Fatal(err)
			}
			// A wakes up: its compare-and-set must fail.
			if err := release(); err != nil {
				t.Fatalf("late writer: %v (it should return the stored token)", err)
			}
			rec, _ := f.record(t, "wx1")
			if rec.Value != b.Value || rec.Version != b.Version {
				t.Fatalf("stored %v; the late writer overwrote %v", rec, b)
			}
			want := b.UsableUntil
			if tc.capped {
				want = b.FetchedAt.Add(defaultCapWindow)
			}
			if !rec.UsableUntil.Equal(want) {
				t.Fatalf("B's token usable until %v, want %v", rec.UsableUntil, want)
			}
			if s := f.cache.Admin().Stats(); s.Refused != 1 {
				t.Fatalf("Refused = %d, want 1", s.Refused)
			}
		})
	}
}

func TestWriterSeeingAnotherFetchInFlightCapsItsToken(t *testing.T) {
	f := newFixture(t, WithLocker(grantAll{}))
	other := f.newCache(t, WithLocker(grantAll{}))
	first := mustToken(t, f.cache, "wx1")

	// A's fetch is in flight (sent, no reply yet) ...
	release := f.stallFetch("wx1", first.Value)
	// ... when B stores: A's fetch may mint after B's, so B's token is
	// stored capped.
	bSentAt := f.clock.Now()
	if _, err := other.Invalidate(context.Background(), "wx1", first.Value); err != nil {
		t.Fatal(err)
	}
	rec, _ := f.record(t, "wx1")
	if want := bSentAt.Add(defaultCapWindow); !rec.UsableUntil.Equal(want) {
		t.Fatalf("contended token usable until %v, want %v", rec.UsableUntil, want)
	}
	_ = release() // A's outcome is not what this test is about
}

func TestAnnouncementsUpdateNearCopiesPrecisely(t *testing.T) {
	o := defaultOptions()
	w := o.capWindow()
	base := Token{Value: "a", Version: 5, Rev: 10, FetchedAt: t0, RefreshAt: t0.Add(time.Hour), UsableUntil: t0.Add(2 * time.Hour)}
	fresh := func() *nearCopy {
		n := &nearCopy{}
		n.adopt(base, t0, n.generation(), &o)
		return n
	}
	// Same record, capped.
	n := fresh()
	if !n.announced(announcement{version: 5, rev: 11, fetchedAt: t0, usableUntil: t0.Add(time.Minute)}, &o) {
		t.Fatal("cap not applied")
	}
	if e := n.cur.Load(); !e.tok.UsableUntil.Equal(t0.Add(time.Minute)) || !e.tok.RefreshAt.Equal(t0.Add(time.Minute)) || !e.current || !e.serveUntil.Equal(t0.Add(time.Minute)) {
		t.Fatalf("cap: %+v", e)
	}
	// A message of a rev already seen (overtaken, or our own) changes nothing.
	if n.announced(announcement{version: 5, rev: 10, fetchedAt: t0, usableUntil: t0.Add(2 * time.Hour)}, &o) {
		t.Fatal("an older message lifted the cap")
	}
	if e := n.cur.Load(); !e.tok.UsableUntil.Equal(t0.Add(time.Minute)) {
		t.Fatalf("after an older message: %+v", e)
	}
	// Newer token: stop serving hits, keep as last good within the cap window.
	n = fresh()
	n.announced(announcement{version: 6, rev: 12, fetchedAt: t0.Add(time.Minute), usableUntil: t0.Add(3 * time.Hour)}, &o)
	if e := n.cur.Load(); e.current || !e.serveUntil.Equal(earliest(t0.Add(time.Minute+w), t0.Add(o.horizon()))) {
		t.Fatalf("newer: %+v", e)
	}
	// A wake message (rev 0) changes nothing.
	n = fresh()
	if n.announced(announcement{}, &o) || !n.cur.Load().current {
		t.Fatal("a wake message changed the copy")
	}
	for _, bad := range []string{"", "wx1", "wx1 x 1 2 3", "wx1 1 2 3 4 5", "wx1 1 2 3", "wx1 1 02 3 4", "wx1 1 -2 3 4"} {
		if _, ok := parseAnnouncement(bad); ok {
			t.Errorf("parsed malformed announcement %q", bad)
		}
	}
	if a, ok := parseAnnouncement("wx1 5 11 60000 1000"); !ok || a.app != "wx1" || a.version != 5 || a.rev != 11 ||
		a.usableUntil.UnixMilli() != 60000 || a.fetchedAt.UnixMilli() != 1000 {
		t.Fatalf("parse: %+v %v", a, ok)
	}
}

func TestRecordRoundTripAndCorruption(t *testing.T) {
	tok := Token{Value: "TOKEN_abc-123", Version: 7, Rev: 1700000000000, UsableUntil: t0.Add(time.Hour), RefreshAt: t0.Add(50 * time.Minute), ExpiresAt: t0.Add(61 * time.Minute), FetchedAt: t0, IssuedAt: t0.Add(time.Second)}
	got, err := DecodeRecord("k", EncodeRecord(tok))
	if err != nil || got.Value != tok.Value || got.Version != 7 || got.Rev != tok.Rev || !got.UsableUntil.Equal(tok.UsableUntil) || !got.FetchedAt.Equal(t0) || !got.IssuedAt.Equal(tok.IssuedAt) {
		t.Fatalf("round trip: %v, %v", got, err)
	}
	long := make([]byte, maxTokenLen+1)
	for i := range long {
		long[i] = 'a'
	}
	for _, tc := range []struct{ in, reason string }{
		{"", "unknown format"},
		{"<html>", "unknown format"},
		{"tk1|1|2|1|4|1|0|t", "unknown format"},
		{"tk2|1|1|2|3|4|5", "too few fields: no fetched_at followed by the access_token"},
		{"tk2|1|1|2|3|4|5|6", "too few fields: no issued_at followed by the access_token"},
		{"tk2|x|1|2|3|4|5|0|t", "field version is not a canonical decimal"},
		{"tk2|1|1|2|3|4|-5|0|t", "field fetched_at is not a canonical decimal"},
		{"tk2|1|1|2|1|4|1|z|t", "field issued_at is not a canonical decimal"},
		{"tk2|1|1|2|1|4|1|01|t", "field issued_at is not a canonical decimal"},
		{"tk2|1|1|2|1|4|1|1234567890123456|t", "field issued_at is not a canonical decimal"},
		{"tk2|1|1|2|1|4|1|0|", "empty access_token"},
		{"tk2|0|1|2|1|4|1|0|t", "version 0"},
		{"tk2|1|0|2|1|4|1|0|t", "rev 0"},
		{"tk2|1|1|5|1|4|1|0|t", "usable_until after expires_at"},
		{"tk2|1|1|3|4|5|1|0|t", "refresh_at after usable_until"},
		{"tk2|1|1|3|2|5|6|0|t", "fetched_at after expires_at"},
		{"tk2|1|1|3|2|5|1|0|a b", "outside printable ASCII, or a '|'"},
		{"tk2|1|1|3|2|5|1|0|a|b", "outside printable ASCII, or a '|'"},
		{"tk2|1|1|3|2|5|1|0|" + string(long), "longer than 2048"},
	} {
		_, err := DecodeRecord("k", tc.in)
		if !errors.Is(err, ErrCorruptRecord) || !contains(err.Error(), tc.reason) {
			t.Errorf("%.20q: err = %v, want %q", tc.in, err, tc.reason)
		}
	}
}

func TestTokenNeverPrintsItsValue(t *testing.T) {
	tok := Token{Value: "SECRET-TOKEN-VALUE", Version: 3}
	for _, s := range []string{fmt.Sprint(tok), fmt.Sprintf("%v %+v %#v %s %d %q", tok, tok, tok, tok, tok, tok), fmt.Sprint([]Token{tok})} {
		if contains(s, tok.Value) {
			t.Fatalf("printed the token: %s", s)
		}
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add("tk2|1|1|2|1|4|1|0|tok")
	f.Add("tk2|99|1700000000001|1700000000000|1699999990000|1700000060000|1699990000000|1699990001000|ACCESS_token-1")
	f.Add("tk2|1|1|2|3|4|5")
	f.Add("<html>")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := DecodeRecord("k", s)
		if err != nil {
			if !errors.Is(err, ErrCorruptRecord) || contains(err.Error(), s) && len(s) > 16 {
				t.Fatalf("bad error for %q: %v", s, err)
			}
			return
		}
		if tok.Value == "" || tok.Version <= 0 || tok.Rev <= 0 || tok.UsableUntil.After(tok.ExpiresAt) || tok.RefreshAt.After(tok.UsableUntil) {
			t.Fatalf("accepted an invalid record %q: %+v", s, tok.LogValue())
		}
		if again, err := DecodeRecord("k", EncodeRecord(tok)); err != nil || again != tok || EncodeRecord(again) != s {
			t.Fatalf("re-encoding %q: %v", s, err)
		}
	})
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// A read that returns the record a newer token has just replaced, after that
// replacement was announced, must not leave the older token in memory as a
// current copy: in a Redis outage it would be served past its death.
func TestReadRacingAnAnnouncementIsDropped(t *testing.T) {
	f := newFixture(t)
	old := mustToken(t, f.cache, "wx1")
	st, _ := f.cache.app("wx1")
	gen := st.near.generation() // the racing read starts
	newer := announcement{app: "wx1", version: old.Version + 1, rev: old.Rev + 1, fetchedAt: f.clock.Now().Add(time.Second), usableUntil: old.UsableUntil.Add(time.Hour)}
	st.near.announced(newer, &f.cache.opt)
	if st.near.adopt(old, f.clock.Now(), gen, &f.cache.opt) { // ... and lands after the announcement
		t.Fatal("a read older than an announcement was adopted")
	}
	e := st.near.cur.Load()
	if e.current {
		t.Fatal("the superseded copy still serves hits")
	}
	if want := newer.fetchedAt.Add(defaultCapWindow); !e.serveUntil.Equal(want) {
		t.Fatalf("superseded copy served until %v, want %v (the newer fetch + cap window)", e.serveUntil, want)
	}
	// A read that raced nothing is the truth about Redis, even with a lower
	// rev (Redis lost its data).
	lost := old
	lost.Rev = 1
	if !st.near.adopt(lost, f.clock.Now(), st.near.generation(), &f.cache.opt) || !st.near.cur.Load().current {
		t.Fatal("an unraced read was not adopted")
	}
}
