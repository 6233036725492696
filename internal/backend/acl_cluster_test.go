package backend_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/internal/backend"
	"github.com/tokenkeeper/tokenkeeper/internal/redistest"
)

// TestACLUserOnCluster is TestACLUserRunsEverything on a 3-master Redis
// Cluster, the user created on every master: the cluster client also
// needs to read the slot map, and nothing else.
func TestACLUserOnCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fake := newUpstream(t)
	addrs := `"` + strings.Join(cl.Addrs(), `", "`) + `"`
	cfg := deployedConfig(t, fmt.Sprintf(`addrs: [%s], username: tokenkeeper, password: %q`, addrs, aclPassword), fake.url)
	var admins []*redis.Client
	for i := range cl.Addrs() {
		admin := cl.NodeClient(i)
		if err := admin.Do(ctx, toAny(backend.ACLSetUser(cfg, "tokenkeeper", aclPassword))...).Err(); err != nil {
			t.Fatalf("ACL SETUSER on node %d: %v", i, err)
		}
		if err := admin.ConfigResetStat(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		admins = append(admins, admin)
	}

	exercise(t, cfg, fake)

	used := map[string]bool{}
	for i, admin := range admins {
		entries, err := admin.Do(ctx, "ACL", "LOG").Slice()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if m, ok := e.(map[any]any); !ok || m["object"] != "config|get" {
				t.Errorf("node %d: the ACL refused something (ACL LOG): %v", i, e)
			}
		}
		for _, c := range usedCommands(t, admin) {
			used[c] = true
		}
	}
	want := append(slices.Clone(backend.ACLCommands), backend.ACLClusterCommands...)
	sort.Strings(want)
	got := slices.Sorted(maps.Keys(used))
	if !slices.Equal(got, want) {
		t.Errorf("commands used %v\nACL commands  %v", got, want)
	}
}
