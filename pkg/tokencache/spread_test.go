package tokencache

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestSpreadRefreshIsStableAtThePhase: a token fetched at its app's phase
// (a little late, as a scheduled fetch is) is due one whole period later,
// at the phase again: in steady state spreading adds no fetch.
func TestSpreadRefreshIsStableAtThePhase(t *testing.T) {
	const period = 100 * time.Minute
	for i := range 200 {
		app := fmt.Sprintf("wx%016d", i)
		// The app's last phase moment at or before t0.
		p := int64(period)
		back := (t0.UnixNano() - int64(phase(app)*float64(p))) % p
		first := time.Unix(0, t0.UnixNano()-(back+p)%p)
		for cycle, at := 0, first; cycle < 5; cycle++ {
			fetched := at.Add(3 * time.Second) // jitter and the fetch's own latency
			next := spreadRefresh(app, fetched, fetched.Add(period))
			if got := next.Sub(at); got != period {
				t.Fatalf("%s cycle %d: due %v after the last phase moment; want exactly one period %v", app, cycle, got, period)
			}
			at = next
		}
	}
}

// TestSpreadRefreshSpreadsAFleetFetchedTogether: 20,000 apps fetched in
// the same second become due evenly over their period (no twentieth of it
// holds more than 1.25x its share), never later than their natural
// RefreshAt and never in the first quarter of the token's period.
func TestSpreadRefreshSpreadsAFleetFetchedTogether(t *testing.T) {
	const n, bins = 20000, 20
	period := 90 * time.Minute
	fetched := t0
	natural := fetched.Add(period)
	var count [bins]int
	for i := range n {
		at := spreadRefresh(fmt.Sprintf("wx%016d", i), fetched, natural)
		if at.After(natural) || at.Before(fetched.Add(period/4)) {
			t.Fatalf("app %d due at %v: outside [fetch + period/4, natural RefreshAt]", i, at.Sub(fetched))
		}
		count[int(at.Sub(fetched)*bins/period)%bins]++
	}
	share := float64(n) / bins * 4 / 3 // nothing falls in the first quarter
	for b, c := range count {
		if b*4 < bins { // the bins within the first quarter
			if c != 0 {
				t.Errorf("bin %d (first quarter) holds %d apps", b, c)
			}
			continue
		}
		if float64(c) > 1.25*share {
			t.Errorf("bin %d holds %d apps; want at most 1.25x the even share %.0f (counts %v)", b, c, share, count)
		}
	}
}

// TestSpreadRefreshLeavesShortPeriods: a period under a minute is not
// moved.
func TestSpreadRefreshLeavesShortPeriods(t *testing.T) {
	if got := spreadRefresh("wxa", t0, t0.Add(50*time.Second)); !got.Equal(t0.Add(50 * time.Second)) {
		t.Fatalf("RefreshAt moved to %v", got)
	}
}

// TestCacheWithRefreshSpreadStoresTheSpreadRefreshAt: the record a cache
// with WithRefreshSpread stores carries the spread RefreshAt (so every
// process and the next leader see it); without the option the natural one.
func TestCacheWithRefreshSpreadStoresTheSpreadRefreshAt(t *testing.T) {
	for _, spread := range []bool{false, true} {
		t.Run(fmt.Sprint("spread=", spread), func(t *testing.T) {
			var opts []Option
			if spread {
				opts = append(opts, WithRefreshSpread())
			}
			f := newFixture(t, opts...)
			tok, err := f.cache.Admin().Refresh(context.Background(), "wxa")
			if err != nil {
				t.Fatal(err)
			}
			natural, _ := f.cache.opt.Lifetimes(tok.FetchedAt, tok.ExpiresAt.Sub(tok.FetchedAt))
			want := natural
			if spread {
				want = time.UnixMilli(spreadRefresh("wxa", tok.FetchedAt, natural).UnixMilli())
			}
			stored, _ := f.record(t, "wxa")
			if !stored.RefreshAt.Equal(want) || !tok.RefreshAt.Equal(want) {
				t.Fatalf("RefreshAt stored %v, returned %v; want %v (natural %v)", stored.RefreshAt, tok.RefreshAt, want, natural)
			}
			if spread && want.Equal(natural) {
				t.Fatal("the spread RefreshAt is the natural one: pick another app")
			}
		})
	}
}
