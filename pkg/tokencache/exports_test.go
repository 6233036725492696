package tokencache

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// The key helpers a tool uses name the keys the scripts touch.
func TestExportedKeysAreTheScriptsKeys(t *testing.T) {
	k := appKeys("p:", "wx1")
	if LockKey("p:", "wx1") != k.lock || IntentsKey("p:", "wx1") != k.intents || RecordKey("p:", "wx1") != k.record {
		t.Fatalf("exported keys %q %q %q differ from %+v", LockKey("p:", "wx1"), IntentsKey("p:", "wx1"), RecordKey("p:", "wx1"), k)
	}
	if got := IntentsKey("p:", "*"); got != "p:{*}:intents" {
		t.Fatalf("scan pattern %q", got)
	}
}

// RecordFields is the order EncodeRecord writes the numbers in.
func TestRecordFieldsAreTheEncodersOrder(t *testing.T) {
	ms := func(n int64) time.Time { return time.UnixMilli(n) }
	rec := EncodeRecord(Token{Value: "tok", Version: 1, Rev: 2, UsableUntil: ms(3), RefreshAt: ms(4), ExpiresAt: ms(5), FetchedAt: ms(6), IssuedAt: ms(7)})
	want := RecordTag + "|1|2|3|4|5|6|7|tok"
	if rec != want || len(RecordFields()) != 7 || RecordFields()[0] != "version" || RecordFields()[6] != "issued_at" {
		t.Fatalf("record %q (want %q), fields %v", rec, want, RecordFields())
	}
	RecordFields()[0] = "changed"
	if RecordFields()[0] != "version" {
		t.Fatal("RecordFields hands out the package's own array")
	}
}

// Sentinel names the package's own error, wrapped or held, and nothing else.
func TestSentinel(t *testing.T) {
	for _, s := range sentinels {
		if got := Sentinel(fmt.Errorf("ctx: %w", s)); got != s {
			t.Errorf("Sentinel(wrapped %v) = %v", s, got)
		}
	}
	if got := Sentinel(&CorruptRecordError{Key: "k", Reason: "r"}); got != ErrCorruptRecord {
		t.Errorf("corrupt record error: %v", got)
	}
	for _, err := range []error{nil, context.DeadlineExceeded, errors.New("x")} {
		if got := Sentinel(err); got != nil {
			t.Errorf("Sentinel(%v) = %v, want nil", err, got)
		}
	}
	if !strings.HasPrefix(ErrUnavailable.Error(), "tokencache: ") {
		t.Error("sentinel messages start with the package name")
	}
}

// Lifetimes is what a stored record carries.
func TestLifetimesAreTheStoredOnes(t *testing.T) {
	f := newFixture(t)
	tok := mustToken(t, f.cache, "wx1")
	refresh, usable := DefaultConfig().Lifetimes(t0, 7200*time.Second)
	if !refresh.Equal(tok.RefreshAt) || !usable.Equal(tok.UsableUntil) {
		t.Fatalf("Lifetimes = %v, %v; stored %v, %v", refresh, usable, tok.RefreshAt, tok.UsableUntil)
	}
}

// An app's key names are kept for every app of a fleet (100,000 at
// scale): they take one buffer of their exact length, not a doubled one.
func TestAppKeysTakeTheirLengthOnly(t *testing.T) {
	const n = 2000
	k := appKeys("tokenkeeper:", "wx0123456789abcdef")
	text := len(k.record) + len(k.intents) + len(k.version) + len(k.rev) + len(k.lock) + len(k.budget) +
		len(k.passive) + len(k.verdicts) + len(k.seen) + len(k.pending) + len(k.hold)
	kept := make([]keys, n)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range kept {
		kept[i] = appKeys("tokenkeeper:", "wx0123456789abcdef")
	}
	runtime.ReadMemStats(&after)
	perApp := float64(after.TotalAlloc-before.TotalAlloc) / n
	// The names' text, the base they are built from, and size-class rounding.
	if limit := 1.5 * float64(text+len(appKeyBase("tokenkeeper:", "wx0123456789abcdef"))); perApp > limit {
		t.Fatalf("appKeys allocates %.0f B per app for %d B of names (limit %.0f)", perApp, text, limit)
	}
	runtime.KeepAlive(kept)
}
