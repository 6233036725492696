package scheduler

import (
	"context"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
)

// SetApps while running: an added app is refreshed at once, a removed one
// never again; a bad set changes nothing.
func TestSetAppsAddsAtOnceAndDropsRemoved(t *testing.T) {
	ref := newFakeRefresher(func(ctx context.Context, app string, n int) (tokencache.Token, error) {
		return tokenAt(t0, time.Hour, 10*time.Minute), nil
	})
	h := start(t, Config{Apps: []string{"wxa", "wxb"}, Refresher: ref}, zeroRand)
	h.result()
	h.result()
	h.waitIdle()
	if _, _, err := h.s.SetApps([]string{"wxa", "wxa"}); err == nil {
		t.Fatal("duplicate apps accepted")
	}
	added, removed, err := h.s.SetApps([]string{"wxa", "wxc"})
	if err != nil || len(added) != 1 || added[0] != "wxc" || len(removed) != 1 || removed[0] != "wxb" {
		t.Fatalf("added %v removed %v err %v", added, removed, err)
	}
	if r := h.result(); r.AppID != "wxc" || !h.clock.Now().Equal(t0) {
		t.Fatalf("first result after SetApps: %q at %v; want wxc at once", r.AppID, h.clock.Now())
	}
	for range 3 {
		if r := h.wakeAndResult(); r.AppID == "wxb" {
			t.Fatal("the removed app was refreshed")
		}
	}
	if n := ref.count("wxb"); n != 1 {
		t.Fatalf("wxb refreshed %d times; want 1 (before its removal)", n)
	}
	if snap := h.s.Snapshot(); len(snap) != 2 || snap[0].AppID != "wxa" || snap[1].AppID != "wxc" {
		t.Fatalf("snapshot %+v", snap)
	}
}
