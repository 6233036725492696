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

// lostReply is what the wechat client returns when the request went out and
// no answer came back.
var lostReply = fmt.Errorf("connection closed: %w", errors.Join(wechat.ErrTransient, wechat.ErrOutcomeUnknown))

// capWindow of the default options: overlap 5m - margin 1m - near max age 10s.
const defaultCapWindow = 230 * time.Second

func TestLostReplyCapsTheStoredToken(t *testing.T) {
	f := newFixture(t)
	first := mustToken(t, f.cache, "wx1")
	f.src.QueueErr(lostReply)
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
			if s := f.cache.Stats(); s.Refused != 1 {
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
	base := Token{Value: "a", Version: 5, FetchedAt: t0, RefreshAt: t0.Add(time.Hour), UsableUntil: t0.Add(2 * time.Hour)}
	e := &nearEntry{tok: base, loadedAt: t0}
	w := defaultCapWindow
	// Same record, capped.
	next, ok := announcement{version: 5, fetchedAt: t0, usableUntil: t0.Add(time.Minute)}.apply(e, w)
	if !ok || !next.tok.UsableUntil.Equal(t0.Add(time.Minute)) || !next.tok.RefreshAt.Equal(t0.Add(time.Minute)) || next.loadedAt.IsZero() {
		t.Fatalf("cap: %+v", next)
	}
	// Overtaken message.
	if _, ok := (announcement{version: 4, fetchedAt: t0.Add(-time.Hour)}).apply(e, w); ok {
		t.Fatal("an older record changed the copy")
	}
	// Newer token: stop serving hits, keep as last good within the cap window.
	next, ok = announcement{version: 6, fetchedAt: t0.Add(time.Minute), usableUntil: t0.Add(3 * time.Hour)}.apply(e, w)
	if !ok || !next.loadedAt.IsZero() || !next.tok.UsableUntil.Equal(t0.Add(time.Minute+w)) {
		t.Fatalf("newer: %+v", next)
	}
	// After a Redis data loss the version restarts, the fetch time does not.
	next, ok = announcement{version: 1, fetchedAt: t0.Add(time.Minute), usableUntil: t0.Add(3 * time.Hour)}.apply(e, w)
	if !ok || !next.loadedAt.IsZero() {
		t.Fatalf("after data loss: %+v", next)
	}
	for _, bad := range []string{"", "wx1", "wx1 x 1 2", "wx1 1 2 3 4"} {
		if _, ok := parseAnnouncement(bad); ok {
			t.Errorf("parsed malformed announcement %q", bad)
		}
	}
}

func TestRecordRoundTripAndCorruption(t *testing.T) {
	tok := Token{Value: "TOKEN_abc-123", Version: 7, UsableUntil: t0.Add(time.Hour), RefreshAt: t0.Add(50 * time.Minute), ExpiresAt: t0.Add(61 * time.Minute), FetchedAt: t0, IssuedAt: t0.Add(time.Second)}
	got, err := decodeRecord("k", encodeRecord(tok))
	if err != nil || got.Value != tok.Value || got.Version != 7 || !got.UsableUntil.Equal(tok.UsableUntil) || !got.FetchedAt.Equal(t0) || !got.IssuedAt.Equal(tok.IssuedAt) {
		t.Fatalf("round trip: %v, %v", got, err)
	}
	long := make([]byte, maxTokenLen+1)
	for i := range long {
		long[i] = 'a'
	}
	for _, tc := range []struct{ in, reason string }{
		{"", "unknown format"},
		{"<html>", "unknown format"},
		{"tk2|1|2|3|4|5|6|x", "unknown format"},
		{"tk1|1|2|3|4|5", "too few fields: no fetched_at followed by the access_token"},
		{"tk1|1|2|3|4|5|6", "too few fields: no issued_at followed by the access_token"},
		{"tk1|x|2|3|4|5|0|t", "field version is not a non-negative integer"},
		{"tk1|1|2|3|4|-5|0|t", "field fetched_at is not a non-negative integer"},
		{"tk1|1|2|1|4|1|z|t", "field issued_at is not a non-negative integer"},
		{"tk1|1|2|1|4|1|0|", "empty access_token"},
		{"tk1|0|2|1|4|1|0|t", "version 0"},
		{"tk1|1|5|1|4|1|0|t", "usable_until after expires_at"},
		{"tk1|1|3|4|5|1|0|t", "refresh_at after usable_until"},
		{"tk1|1|3|2|5|6|0|t", "fetched_at after expires_at"},
		{"tk1|1|3|2|5|1|0|a b", "outside printable ASCII"},
		{"tk1|1|3|2|5|1|0|" + string(long), "longer than 2048"},
	} {
		_, err := decodeRecord("k", tc.in)
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
	f.Add("tk1|1|2|1|4|1|0|tok")
	f.Add("tk1|99|1700000000000|1699999990000|1700000060000|1699990000000|1699990001000|ACCESS_token-1")
	f.Add("tk1|1|2|3|4|5")
	f.Add("<html>")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := decodeRecord("k", s)
		if err != nil {
			if !errors.Is(err, ErrCorruptRecord) || contains(err.Error(), s) && len(s) > 16 {
				t.Fatalf("bad error for %q: %v", s, err)
			}
			return
		}
		if tok.Value == "" || tok.Version <= 0 || tok.UsableUntil.After(tok.ExpiresAt) || tok.RefreshAt.After(tok.UsableUntil) {
			t.Fatalf("accepted an invalid record %q: %+v", s, tok.LogValue())
		}
		if again, err := decodeRecord("k", encodeRecord(tok)); err != nil || again.Value != tok.Value || again.Version != tok.Version {
			t.Fatalf("re-encoding %q: %v", s, err)
		}
	})
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// A read that returns the record a newer token has just replaced, after that
// replacement was announced, must not leave the older token in memory as a
// fresh copy: in a Redis outage it would be served past its death.
func TestReadRacingAnAnnouncementStoresADemotedCopy(t *testing.T) {
	f := newFixture(t)
	old := mustToken(t, f.cache, "wx1")
	st, _ := f.cache.app("wx1")
	newer := announcement{app: "wx1", version: old.Version + 1, fetchedAt: f.clock.Now().Add(time.Second), usableUntil: old.UsableUntil.Add(time.Hour)}
	st.announced.Store(&newer)
	f.cache.storeNear(st, old, f.clock.Now()) // the racing read lands after the announcement
	e := st.near.Load()
	if !e.loadedAt.IsZero() {
		t.Fatal("the superseded copy still serves hits")
	}
	if want := newer.fetchedAt.Add(defaultCapWindow); !e.tok.UsableUntil.Equal(want) {
		t.Fatalf("superseded copy usable until %v, want %v (the newer fetch + cap window)", e.tok.UsableUntil, want)
	}
	// An announcement about an older token changes nothing.
	older := announcement{app: "wx1", version: old.Version - 1, fetchedAt: old.FetchedAt.Add(-time.Hour)}
	st.announced.Store(&older)
	f.cache.storeNear(st, old, f.clock.Now())
	if e := st.near.Load(); e.loadedAt.IsZero() || !e.tok.UsableUntil.Equal(old.UsableUntil) {
		t.Fatalf("an older announcement demoted the copy: %+v", e)
	}
}

// When WeChat's own clock (the replies' Date) proves the order of two mints,
// a late writer neither caps nor loses anything: the newest token is kept,
// whichever process fetched it.
func TestLateWriterUsesWeChatsClockToKeepTheNewest(t *testing.T) {
	for _, tc := range []struct {
		name       string
		aIssued    time.Duration // A's reply Date, from t0; B's is t0+1m
		wantStored string        // "A" or "B"
	}{
		{"A minted first: B's token lives on, uncapped", 0, "B"},
		{"A minted last: A's token replaces B's", 2 * time.Minute, "A"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, WithLocker(grantAll{}))
			other := f.newCache(t, WithLocker(grantAll{}))
			first := mustToken(t, f.cache, "wx1")
			f.src.issuedAt = func(call int) time.Time {
				switch call {
				case 2: // A's fetch
					return t0.Add(tc.aIssued)
				case 3: // B's fetch
					return t0.Add(time.Minute)
				}
				return time.Time{}
			}
			release := f.stallFetch("wx1", first.Value)
			f.clock.Advance(time.Minute)
			b, err := other.Invalidate(context.Background(), "wx1", first.Value)
			if err != nil {
				t.Fatal(err)
			}
			if err := release(); err != nil {
				t.Fatalf("late writer: %v", err)
			}
			rec, _ := f.record(t, "wx1")
			switch tc.wantStored {
			case "B":
				if rec.Value != b.Value || !rec.UsableUntil.Equal(b.UsableUntil) {
					t.Fatalf("stored %v usable until %v; want B's %v untouched (usable until %v)", rec, rec.UsableUntil, b, b.UsableUntil)
				}
			case "A":
				if rec.Value != "tok-2" || rec.Version != b.Version+1 {
					t.Fatalf("stored %v; want A's tok-2 as version %d", rec, b.Version+1)
				}
			}
			if n := f.src.Calls(); n != 3 {
				t.Fatalf("fetches = %d, want 3: the order was proven, nothing to refetch", n)
			}
		})
	}
}
