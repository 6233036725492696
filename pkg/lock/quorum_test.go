package lock

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// quorumOf starts n miniredis servers and returns them with a client each.
func quorumOf(t *testing.T, n int) ([]*miniredis.Miniredis, []redis.UniversalClient) {
	t.Helper()
	var ms []*miniredis.Miniredis
	var cs []redis.UniversalClient
	for range n {
		m := miniredis.RunT(t)
		c := redis.NewClient(&redis.Options{Addr: m.Addr(), MaxRetries: -1, DialerRetries: 1})
		t.Cleanup(func() { c.Close() })
		ms, cs = append(ms, m), append(cs, c)
	}
	return ms, cs
}

func TestQuorumLeaderIsTheMajoritysHolder(t *testing.T) {
	ms, cs := quorumOf(t, 3)
	e, err := NewElector(ElectorConfig{Quorum: cs, Name: "q:leader", Identity: "probe", LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	leader := func() (string, error) { return e.Leader(ctx) }
	set := func(vals ...string) {
		for i, v := range vals {
			ms[i].Del("q:leader")
			if v != "" {
				if err := ms[i].Set("q:leader", v); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	set("a/1", "b/2", "a/1")
	if l, err := leader(); l != "a" || err != nil {
		t.Fatalf("a on two of three: %q %v", l, err)
	}
	set("a/1", "b/2", "")
	if l, err := leader(); l != "" || err != nil {
		t.Fatalf("no majority: %q %v, want none", l, err)
	}
	set("a/1", "a/2", "")
	if l, err := leader(); l != "" || err != nil {
		t.Fatalf("two terms of a (different values): %q %v, want none", l, err)
	}
	set("a/1", "a/1", "")
	ms[2].Close()
	if l, err := leader(); l != "a" || err != nil {
		t.Fatalf("one master down: %q %v", l, err)
	}
	ms[1].Close()
	if l, err := leader(); err == nil || !strings.Contains(err.Error(), "1 of 3 Redis masters answered, 2 needed") {
		t.Fatalf("two masters down: %q %v", l, err)
	}
}

func TestQuorumLockerNeedsAMajority(t *testing.T) {
	ms, cs := quorumOf(t, 3)
	l := NewRedisLocker(cs[0], cs[1:]...)
	ctx := context.Background()
	held, err := l.TryLock(ctx, "q:lock", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.TryLock(ctx, "q:lock", time.Second); !errors.Is(err, ErrNotAcquired) {
		t.Fatalf("second holder: %v, want ErrNotAcquired", err)
	}
	if err := held.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	ms[0].Close()
	held, err = l.TryLock(ctx, "q:lock", time.Second)
	if err != nil {
		t.Fatalf("one master down: %v", err)
	}
	_ = held.Unlock(ctx)
	ms[1].Close()
	if _, err := l.TryLock(ctx, "q:lock", time.Second); err == nil || errors.Is(err, ErrNotAcquired) {
		t.Fatalf("two masters down: %v, want a Redis error", err)
	}
}
