package gateway

import (
	"context"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/redistest"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
)

func TestRedisLedgerOnARealServer(t *testing.T) {
	client := redistest.Start(t).Client()
	l := RedisLedger(client, keyPrefix)
	ctx := context.Background()
	until := time.Now().Add(90 * time.Second).Truncate(time.Millisecond)
	const hash = "00ff"
	want := HandedOut{App: app1, Credential: "team|a", StoodFor: "0a1b2c3d", Until: until}
	if err := l.Record(ctx, hash, want); err != nil {
		t.Fatal(err)
	}
	got, found, err := l.Find(ctx, hash)
	if err != nil || !found || got.App != want.App || got.Credential != want.Credential || got.StoodFor != want.StoodFor || !got.Until.Equal(until) {
		t.Fatalf("Find = %+v %v %v, want %+v", got, found, err, want)
	}
	key := tokencache.GatewayTokenKey(keyPrefix, hash)
	if ttl := client.PTTL(ctx, key).Val(); ttl <= 0 || ttl > 90*time.Second {
		t.Fatalf("the entry's TTL is %v, want it to end at its honour time", ttl)
	}
	if _, found, err := l.Find(ctx, "abcd"); found || err != nil {
		t.Fatalf("an unknown hash: found %v, err %v", found, err)
	}
	// A record already past its honour time is not written.
	if err := l.Record(ctx, "0aa0", HandedOut{App: app1, Credential: "a", StoodFor: "0a1b2c3d", Until: time.Now().Add(-time.Second)}); err != nil {
		t.Fatal(err)
	}
	if n := client.Exists(ctx, tokencache.GatewayTokenKey(keyPrefix, "0aa0")).Val(); n != 0 {
		t.Fatal("an expired record was written")
	}
	// A poisoned entry, or an older release's "<app>|<until>", is an
	// error, never an app.
	for _, poison := range []string{"wx1", "wx1|soon", "bad app|1", "|1", "wx1|1", "wx1|1|2|", "wx1|1||a", "wx1|x|1|a", "bad app|1|1|a"} {
		client.Set(ctx, key, poison, time.Minute)
		if got, found, err := l.Find(ctx, hash); err == nil || found || got.App != "" {
			t.Fatalf("poison %q: got %+v %v %v, want an error", poison, got, found, err)
		}
	}
}
