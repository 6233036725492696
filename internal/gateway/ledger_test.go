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
	if err := l.Record(ctx, hash, app1, until); err != nil {
		t.Fatal(err)
	}
	app, got, found, err := l.Find(ctx, hash)
	if err != nil || !found || app != app1 || !got.Equal(until) {
		t.Fatalf("Find = %q %v %v %v, want %q until %v", app, got, found, err, app1, until)
	}
	key := tokencache.GatewayTokenKey(keyPrefix, hash)
	if ttl := client.PTTL(ctx, key).Val(); ttl <= 0 || ttl > 90*time.Second {
		t.Fatalf("the entry's TTL is %v, want it to end at its honour time", ttl)
	}
	if _, _, found, err := l.Find(ctx, "abcd"); found || err != nil {
		t.Fatalf("an unknown hash: found %v, err %v", found, err)
	}
	// A record already past its honour time is not written.
	if err := l.Record(ctx, "0aa0", app1, time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if n := client.Exists(ctx, tokencache.GatewayTokenKey(keyPrefix, "0aa0")).Val(); n != 0 {
		t.Fatal("an expired record was written")
	}
	// A poisoned entry is an error, never an app.
	for _, poison := range []string{"wx1", "wx1|soon", "bad app|1", "|1"} {
		client.Set(ctx, key, poison, time.Minute)
		if app, _, found, err := l.Find(ctx, hash); err == nil || found || app != "" {
			t.Fatalf("poison %q: got %q %v %v, want an error", poison, app, found, err)
		}
	}
}
