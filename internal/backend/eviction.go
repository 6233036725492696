package backend

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// SafeEvictionPolicy is the only maxmemory-policy under which Redis never
// drops tokenkeeper's keys on its own. Under any other, a full Redis
// evicts keys, and with them a day's fetch count (the daily budget starts
// again from zero, so the fleet can spend WeChat's daily quota twice), the
// fetch intents and the highest revision a record had; FLUSHALL or a
// restart without persistence does the same. The cache stays correct
// (writes are fenced), but the budget no longer protects the quota.
const SafeEvictionPolicy = "noeviction"

// EvictionCheck is what CheckEviction found.
type EvictionCheck struct {
	// Policies are the maxmemory-policy of each server asked (one, or
	// each Cluster master), by address; empty if none could be read.
	Policies map[string]string
	// Err says why the policy could not be read, e.g. a NOPERM under the
	// least-privilege ACL user (CONFIG is not among ACLCommands).
	Err error
}

// Safe reports whether every server was read and runs noeviction.
func (e EvictionCheck) Safe() bool {
	if e.Err != nil || len(e.Policies) == 0 {
		return false
	}
	for _, p := range e.Policies {
		if p != SafeEvictionPolicy {
			return false
		}
	}
	return true
}

// Warning is the operator's message, "" when Safe.
func (e EvictionCheck) Warning() string {
	switch {
	case e.Safe():
		return ""
	case e.Err != nil && strings.Contains(e.Err.Error(), "NOPERM"):
		return "redis maxmemory-policy unknown: CONFIG GET is not allowed to this Redis user (expected with the least-privilege ACL user); make sure it is " + SafeEvictionPolicy + ": under any other policy a full Redis evicts the daily fetch counts and the budget silently starts again from zero"
	case e.Err != nil:
		return fmt.Sprintf("redis maxmemory-policy unknown (%v); make sure it is %s: under any other policy a full Redis evicts the daily fetch counts and the budget silently starts again from zero", e.Err, SafeEvictionPolicy)
	}
	var bad []string
	for addr, p := range e.Policies {
		if p != SafeEvictionPolicy {
			bad = append(bad, addr+" has "+p)
		}
	}
	return fmt.Sprintf("redis maxmemory-policy is not %s (%s): a full Redis will evict the daily fetch counts and the budget silently starts again from zero; set maxmemory-policy %[1]s", SafeEvictionPolicy, strings.Join(bad, ", "))
}

// CheckEviction reads maxmemory-policy from the server client talks to, or
// from every master of a Cluster.
func CheckEviction(ctx context.Context, client redis.UniversalClient) EvictionCheck {
	if c, ok := client.(clientWithLocks); ok {
		client = c.UniversalClient
	}
	res := EvictionCheck{Policies: map[string]string{}}
	var mu sync.Mutex
	read := func(ctx context.Context, c *redis.Client) error {
		m, err := c.ConfigGet(ctx, "maxmemory-policy").Result()
		if err != nil {
			return fmt.Errorf("CONFIG GET maxmemory-policy on %s: %w", c.Options().Addr, err)
		}
		mu.Lock()
		defer mu.Unlock()
		res.Policies[c.Options().Addr] = m["maxmemory-policy"]
		return nil
	}
	switch c := client.(type) {
	case *redis.ClusterClient:
		res.Err = c.ForEachMaster(ctx, read)
	default:
		m, err := client.ConfigGet(ctx, "maxmemory-policy").Result()
		if err != nil {
			res.Err = fmt.Errorf("CONFIG GET maxmemory-policy: %w", err)
			break
		}
		res.Policies[addrOf(client)] = m["maxmemory-policy"]
	}
	if res.Err != nil {
		res.Policies = nil
	}
	return res
}

// addrOf names the server a non-Cluster client talks to.
func addrOf(client redis.UniversalClient) string {
	if c, ok := client.(*redis.Client); ok {
		return c.Options().Addr
	}
	return "the master"
}
