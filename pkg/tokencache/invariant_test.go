package tokencache

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// These tests attack the promise "every token handed out is live at
// WeChat" where the near copy and Redis can disagree: a lost announcement,
// a partition, a data loss, a poison record.

// outage makes every Redis command fail, as a partition or a dead server
// would; pub/sub stays connected, so nothing is announced either.
func (f *fixture) outage(t *testing.T) {
	t.Helper()
	f.m.SetError("ERR simulated outage")
	t.Cleanup(func() { f.m.SetError("") })
}

// Another process capped the record (as beginFetch does before a classic
// fetch) and this process missed that announcement. When it later reads the
// capped record, the older announcement it holds must not lift the cap in
// memory: once Redis is gone, the copy dies at the cap.
func TestNearCopyKeepsACapWhoseAnnouncementWasLost(t *testing.T) {
	f := newFixture(t)
	stored := mustToken(t, f.cache, "wx1")
	f.waitApplied(t, "wx1", stored)

	capped := stored
	capped.UsableUntil = f.clock.Now().Add(time.Minute)
	capped.RefreshAt = f.clock.Now().Add(30 * time.Second)
	f.putRecordSilently(t, "wx1", capped)

	f.clock.Advance(11 * time.Second)
	if tok, _, err := f.cache.Admin().Peek(context.Background(), "wx1"); err != nil || !tok.UsableUntil.Equal(capped.UsableUntil) {
		t.Fatalf("after reading the capped record the copy is usable until %v, want the cap %v", tok.UsableUntil, capped.UsableUntil)
	}
	f.outage(t)
	f.clock.Advance(10 * time.Minute)
	if tok, err := f.cache.Token(context.Background(), "wx1"); err == nil {
		t.Fatalf("10 minutes after a cap of 1 minute, during an outage, Token() = %v; want an error", tok)
	}
}

// A process cut off from Redis cannot hear of a refresh elsewhere, and any
// fetch sent after Redis last confirmed its copy may have invalidated it:
// the copy is served at most one overlap (less the margin) after that
// confirmation, however long the token's own life.
func TestNearCopyIsNotServedPastTheConfirmationHorizon(t *testing.T) {
	f := newFixture(t)
	tok := mustToken(t, f.cache, "wx1")
	f.outage(t)
	f.clock.Advance(3 * time.Minute)
	if got, err := f.cache.Token(context.Background(), "wx1"); err != nil || got.Value != tok.Value {
		t.Fatalf("3 minutes into an outage: %v, %v; want the near copy", got, err)
	}
	f.clock.Advance(3 * time.Minute) // 6 minutes since Redis confirmed it; overlap 5
	if got, err := f.cache.Token(context.Background(), "wx1"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("6 minutes into an outage: %v, %v; want ErrUnavailable (a fetch elsewhere may have killed it)", got, err)
	}
}

// After a Redis data loss the first new token may be announced while this
// process is not listening (paused, reconnecting). Its later reads of fresh
// records must still give it a usable copy for the next outage.
func TestFreshRecordAfterDataLossIsUsableThoughItsAnnouncementWasMissed(t *testing.T) {
	f := newFixture(t)
	other := f.newCache(t)
	first := mustToken(t, f.cache, "wx1")
	second, err := other.Invalidate(context.Background(), "wx1", first.Value)
	if err != nil {
		t.Fatal(err)
	}
	f.waitApplied(t, "wx1", second)
	f.clock.Advance(5 * time.Minute)

	f.m.FlushAll() // data loss; the first token after it is stored unannounced
	now := f.clock.Now()
	fresh := Token{Value: "after-loss", Version: 1, FetchedAt: now, ExpiresAt: now.Add(2 * time.Hour),
		UsableUntil: now.Add(119 * time.Minute), RefreshAt: now.Add(114 * time.Minute)}
	f.putRecordSilently(t, "wx1", fresh)

	f.clock.Advance(11 * time.Second)
	if got := mustToken(t, f.cache, "wx1"); got.Value != fresh.Value {
		t.Fatalf("Token() = %v, want the record stored after the loss", got)
	}
	f.outage(t)
	f.clock.Advance(time.Second)
	if got, err := f.cache.Token(context.Background(), "wx1"); err != nil || got.Value != fresh.Value {
		t.Fatalf("during an outage right after: %v, %v; want the fresh copy", got, err)
	}
}

// Poison: records the scripts used to accept and Go rejects. Each is
// replaced by exactly one fetch and never served.
func TestPoisonRecordIsReplacedByOneFetch(t *testing.T) {
	for _, tc := range []struct {
		name   string
		poison func(good string) string
	}{
		{"space in token, usable until in the past", func(good string) string {
			return withField(good, fieldUsableUntil, "1000", fieldRefreshAt, "1000") + " x"
		}},
		{"space in token, usable until in the future", func(good string) string { return good + " x" }},
		{"control byte in token", func(good string) string { return good + "\x01" }},
		{"token over 2048 bytes", func(good string) string { return good + strings.Repeat("a", 2100) }},
		{"version 0", func(good string) string { return withField(good, fieldVersion, "0") }},
		{"refresh_at after usable_until", func(good string) string {
			return withField(good, fieldRefreshAt, "9999999999999")
		}},
		{"usable_until after expires_at", func(good string) string {
			return withField(good, fieldUsableUntil, "9999999999999", fieldRefreshAt, "1000")
		}},
		{"a number beyond int64", func(good string) string {
			return withField(good, fieldIssuedAt, "99999999999999999999")
		}},
		{"a leading zero", func(good string) string { return withField(good, fieldIssuedAt, "01") }},
		{"a life of 48 hours", func(good string) string {
			return withField(good, fieldUsableUntil, "1795320000000", fieldExpiresAt, "1795320000000")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			good := EncodeRecord(Token{Value: "poisoned", Version: 7, UsableUntil: t0.Add(time.Hour),
				RefreshAt: t0.Add(50 * time.Minute), ExpiresAt: t0.Add(2 * time.Hour), FetchedAt: t0})
			poison := tc.poison(good)
			if _, err := DecodeRecord("k", poison); err == nil {
				t.Fatalf("test bug: %q decodes", poison)
			}
			f.m.Set("tokenkeeper:{wx1}:token", poison)
			f.m.SetTTL("tokenkeeper:{wx1}:token", time.Hour)
			tok, err := f.cache.Token(context.Background(), "wx1")
			if err != nil {
				t.Fatalf("Token() over a poison record: %v", err)
			}
			if strings.Contains(tok.Value, "poisoned") {
				t.Fatalf("served the poison record's token %v", tok)
			}
			if n := f.src.Calls(); n != 1 {
				t.Fatalf("upstream fetches = %d, want exactly 1", n)
			}
			if rec, _ := f.record(t, "wx1"); rec.Value != tok.Value {
				t.Fatalf("record holds %v, want the fetched %v", rec, tok)
			}
			if got := f.cache.Admin().Stats().CorruptRecords; got < 1 {
				t.Fatalf("CorruptRecords = %d, want it counted", got)
			}
		})
	}
}

// A resubscription hides a gap in which announcements were lost: every copy
// must then be confirmed before use. On a real redis-server, whose pub/sub
// connection is killed while another process caps the token.
func TestResubscriptionMakesEveryCopyConfirmBeforeUse(t *testing.T) {
	c, admin := cacheOnRealRedis(t, &scriptedSource{})
	ctx := context.Background()
	tok := mustToken(t, c, "wx1")
	st, _ := c.app("wx1")
	waitFor(t, "the first subscription", func() bool { return c.Admin().Stats().SubscriptionGaps >= 1 })
	gaps := c.Admin().Stats().SubscriptionGaps
	if e := st.near.cur.Load(); !e.current {
		t.Fatal("the copy is not current before the gap")
	}
	if err := admin.ClientKillByFilter(ctx, "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	// Meanwhile the token is capped, unannounced (its message is lost).
	capped := tok
	capped.UsableUntil = time.Now().Add(time.Minute)
	capped.RefreshAt = capped.UsableUntil
	capped.Rev = tok.Rev + 1
	if err := admin.Set(ctx, RecordKey("tokenkeeper:", "wx1"), EncodeRecord(capped), time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the resubscription", func() bool { return c.Admin().Stats().SubscriptionGaps > gaps })
	if e := st.near.cur.Load(); e.current {
		t.Fatal("after a resubscription the copy is still served without confirmation")
	}
	got, err := c.Token(ctx, "wx1")
	if err != nil || got.UsableUntil.UnixMilli() != capped.UsableUntil.UnixMilli() {
		t.Fatalf("first read after the gap: %v, %v; want the capped record", got, err)
	}
}
