package backend_test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/internal/backend"
	"github.com/tokenkeeper/tokenkeeper/internal/redistest"
)

const aclPassword = "acl-test-password-0123456789"

// TestACLUserRunsEverything creates the least-privilege user of
// backend.ACLSetUser on a real redis-server and runs all of tokenkeeper as
// that user: nothing is refused (the ACL LOG stays empty), every command
// of backend.ACLCommands is used (none is granted for nothing), and a
// command, a key or a channel outside the rules fails with NOPERM.
func TestACLUserRunsEverything(t *testing.T) {
	srv := redistest.Start(t)
	admin := srv.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fake := newUpstream(t)
	cfg := deployedConfig(t, fmt.Sprintf(`addrs: [%q], username: tokenkeeper, password: %q`, srv.Addr(), aclPassword), fake.url)
	if err := admin.Do(ctx, toAny(backend.ACLSetUser(cfg, "tokenkeeper", aclPassword))...).Err(); err != nil {
		t.Fatalf("ACL SETUSER: %v", err)
	}
	if err := admin.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatal(err)
	}

	exercise(t, cfg, fake)

	// The one refusal allowed: the replica's maxmemory-policy check,
	// which it reports instead (TestEvictionCheck).
	entries, err := admin.Do(ctx, "ACL", "LOG").Slice()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if m, ok := e.(map[any]any); !ok || m["object"] != "config|get" {
			t.Errorf("the ACL refused something (ACL LOG): %v", e)
		}
	}
	used := usedCommands(t, admin)
	granted := slices.Clone(backend.ACLCommands)
	sort.Strings(granted)
	if !slices.Equal(used, granted) {
		t.Errorf("commands used %v\nACLCommands   %v", used, granted)
	}

	// Outside the rules: a command, a key, a channel.
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: "tokenkeeper", Password: aclPassword})
	defer c.Close()
	for name, err := range map[string]error{
		"FLUSHALL":                        c.FlushAll(ctx).Err(),
		"GET of another prefix's key":     c.Get(ctx, "other:{wx1}:token").Err(),
		"PUBLISH on another channel":      c.Publish(ctx, "other:events", "x").Err(),
		"CONFIG GET (the eviction check)": c.ConfigGet(ctx, "maxmemory-policy").Err(),
	} {
		if err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
			t.Errorf("%s as the tokenkeeper user: err %v, want NOPERM", name, err)
		}
	}
	if err := c.Get(ctx, "tokenkeeper:{wx1}:token").Err(); err != nil {
		t.Errorf("GET of its own record: %v", err)
	}
}

// usedCommands lists, sorted, the commands INFO commandstats counts as
// called, less those of the test's admin connection.
func usedCommands(t *testing.T, admin *redis.Client) []string {
	t.Helper()
	info, err := admin.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	// config: the test's CONFIG RESETSTAT, and the eviction check, refused.
	adminOnly := map[string]bool{"acl": true, "info": true, "config": true, "hello": true, "auth": true, "client": true}
	var used []string
	for _, line := range strings.Split(info, "\n") {
		name, stats, ok := strings.Cut(strings.TrimPrefix(strings.TrimSpace(line), "cmdstat_"), ":")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		if !strings.HasPrefix(stats, "calls=") || strings.HasPrefix(stats, "calls=0,") {
			continue
		}
		base, _, _ := strings.Cut(name, "|")
		if adminOnly[base] {
			continue
		}
		used = append(used, name)
	}
	sort.Strings(used)
	return used
}

func toAny(args []string) []any {
	out := make([]any, len(args))
	for i, a := range args {
		out[i] = a
	}
	return out
}
