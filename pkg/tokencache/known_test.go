package tokencache

import (
	"context"
	"testing"
	"time"
)

// TestKnownFollowsReadsAndAnnouncements: Known sends nothing to Redis; it
// knows nothing of an app never seen, the stored token once read, and the
// newer token another process stored as soon as its announcement arrives
// (before any read), then the confirmed copy once read.
func TestKnownFollowsReadsAndAnnouncements(t *testing.T) {
	f := newFixture(t)
	reader := f.newCache(t)
	waitFor(t, "the reader's subscription", func() bool { return reader.Admin().Stats().SubscriptionGaps > 0 })
	if _, ok := reader.Admin().Known("wxa"); ok {
		t.Fatal("Known reports an app never seen")
	}
	first := mustToken(t, f.cache, "wxa")
	mustToken(t, reader, "wxa")
	before := f.cmds.n.Load()
	k, ok := reader.Admin().Known("wxa")
	if !ok || !k.Confirmed || k.Version != first.Version || !k.UsableUntil.Equal(first.UsableUntil) || !k.FetchedAt.Equal(first.FetchedAt) {
		t.Fatalf("Known = %+v, %v; want the confirmed token %v", k, ok, first)
	}
	if n := f.cmds.n.Load() - before; n != 0 {
		t.Fatalf("Known sent %d commands", n)
	}

	f.clock.Advance(10 * time.Minute) // the replacement's times differ
	next, err := f.cache.Invalidate(context.Background(), "wxa", first.Value)
	if err != nil || next.Value == first.Value {
		t.Fatalf("Invalidate: %v, %v", next, err)
	}
	waitFor(t, "the announcement of the replacement", func() bool {
		k, _ := reader.Admin().Known("wxa")
		return k.Version == next.Version
	})
	k, _ = reader.Admin().Known("wxa")
	if k.Confirmed || !k.UsableUntil.Equal(next.UsableUntil) || !k.FetchedAt.Equal(next.FetchedAt) {
		t.Fatalf("Known after the announcement = %+v; want the announced %v, unconfirmed", k, next)
	}
	if _, _, err := reader.Admin().Peek(context.Background(), "wxa"); err != nil {
		t.Fatal(err)
	}
	if k, _ := reader.Admin().Known("wxa"); !k.Confirmed || k.Version != next.Version {
		t.Fatalf("Known after a read = %+v; want the confirmed %v", k, next)
	}
}
