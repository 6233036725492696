package tktest_test

import (
	"context"
	"os"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/internal/tktest"
)

func TestMain(m *testing.M) { os.Exit(tktest.Main(m)) }

// Every scenario starts on an empty data set, though the real servers are
// shared, and Down cuts off only the scenario's own clients.
func TestScenariosAreIsolatedAndDownIsTheirs(t *testing.T) {
	ctx := context.Background()
	for round := 0; round < 2; round++ {
		tktest.ForEachBackend(t, func(t *testing.T, b *tktest.Backend) {
			c := b.Client()
			if n, err := c.Exists(ctx, "tktest:{k}:x").Result(); err != nil || n != 0 {
				t.Fatalf("round %d: a key of an earlier scenario is visible (%d, %v)", round, n, err)
			}
			if err := c.Set(ctx, "tktest:{k}:x", "v", 0).Err(); err != nil {
				t.Fatal(err)
			}
			other := b.Client()
			b.Down()
			if err := c.Get(ctx, "tktest:{k}:x").Err(); err == nil || err == redis.Nil {
				t.Fatalf("a client answered after Down: %v", err)
			}
			if err := other.Ping(ctx).Err(); err == nil {
				t.Fatal("a second client of the scenario answered after Down")
			}
		})
	}
	if t.Failed() {
		return
	}
	// The shared servers still serve the next scenario.
	tktest.ForEachBackend(t, func(t *testing.T, b *tktest.Backend) {
		if err := b.Client().Ping(ctx).Err(); err != nil {
			t.Fatalf("after an earlier scenario's Down: %v", err)
		}
	}, tktest.RedisServer, tktest.Cluster)
}

// Clients are of the backend's kind: a cluster client on the cluster.
func TestClientKinds(t *testing.T) {
	tktest.ForEachBackend(t, func(t *testing.T, b *tktest.Backend) {
		_, isCluster := b.Client().(*redis.ClusterClient)
		if isCluster != (b.Kind == tktest.Cluster) {
			t.Fatalf("%s: cluster client %v", b.Kind, isCluster)
		}
		if (b.Mini != nil) != (b.Kind == tktest.Miniredis) {
			t.Fatalf("%s: Mini set %v", b.Kind, b.Mini != nil)
		}
	})
}
