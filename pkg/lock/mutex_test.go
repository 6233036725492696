package lock

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/go-redsync/redsync/v4"
	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/internal/redistest"
)

func newMiniLocker(t *testing.T) (*miniredis.Miniredis, *RedisLocker) {
	t.Helper()
	mr := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	return mr, NewRedisLocker(c)
}

func TestTryLockIsExclusive(t *testing.T) {
	mr, l := newMiniLocker(t)
	ctx := context.Background()
	first, err := l.TryLock(ctx, "app:wx1", 10*time.Second)
	if err != nil {
		t.Fatalf("first TryLock: %v", err)
	}
	if left := time.Until(first.Until()); left <= 9*time.Second || left > 10*time.Second {
		t.Errorf("Until is %v from now, want just under the 10s ttl", left)
	}
	if ttl := mr.TTL("app:wx1"); ttl != 10*time.Second {
		t.Errorf("key TTL in Redis = %v, want 10s", ttl)
	}
	second, err := l.TryLock(ctx, "app:wx1", 10*time.Second)
	if !errors.Is(err, ErrNotAcquired) || second != nil {
		t.Fatalf("second TryLock = %v, %v; want nil, ErrNotAcquired", second, err)
	}
	// Another name is another lock.
	if other, err := l.TryLock(ctx, "app:wx2", 10*time.Second); err != nil || other == nil {
		t.Fatalf("TryLock of another name = %v, %v; want a lock", other, err)
	}
}

func TestUnlockLetsAnotherTake(t *testing.T) {
	mr, l := newMiniLocker(t)
	ctx := context.Background()
	held, err := l.TryLock(ctx, "app:wx1", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := held.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	if mr.Exists("app:wx1") {
		t.Fatal("key still present after Unlock")
	}
	if _, err := l.TryLock(ctx, "app:wx1", 10*time.Second); err != nil {
		t.Fatalf("TryLock after Unlock: %v", err)
	}
}

func TestExpiryLetsAnotherTake(t *testing.T) {
	mr, l := newMiniLocker(t)
	ctx := context.Background()
	if _, err := l.TryLock(ctx, "app:wx1", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	mr.FastForward(4 * time.Second)
	if _, err := l.TryLock(ctx, "app:wx1", 5*time.Second); !errors.Is(err, ErrNotAcquired) {
		t.Fatalf("TryLock before expiry: %v, want ErrNotAcquired", err)
	}
	mr.FastForward(1 * time.Second)
	if _, err := l.TryLock(ctx, "app:wx1", 5*time.Second); err != nil {
		t.Fatalf("TryLock after expiry: %v", err)
	}
}

func TestUnlockAfterExpiryReturnsNilAndSparesTheNewHolder(t *testing.T) {
	mr, l := newMiniLocker(t)
	ctx := context.Background()
	stale, err := l.TryLock(ctx, "app:wx1", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	mr.FastForward(5 * time.Second)
	if err := stale.Unlock(ctx); err != nil {
		t.Fatalf("Unlock of an expired, untaken lock: %v, want nil", err)
	}

	stale, err = l.TryLock(ctx, "app:wx1", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	mr.FastForward(5 * time.Second)
	if _, err := l.TryLock(ctx, "app:wx1", 5*time.Second); err != nil {
		t.Fatalf("new holder: %v", err)
	}
	newValue, _ := mr.Get("app:wx1")
	if err := stale.Unlock(ctx); err != nil {
		t.Fatalf("Unlock of an expired lock now held by another: %v, want nil", err)
	}
	if v, err := mr.Get("app:wx1"); err != nil || v != newValue {
		t.Fatalf("the stale Unlock removed the new holder's lock: value %q (err %v), want %q", v, err, newValue)
	}
}

func TestTryLockRedisDownIsNotErrNotAcquired(t *testing.T) {
	srv := redistest.Start(t)
	// Without go-redis's own retries and dial backoff the failure shows at once.
	client := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1, DialerRetries: 1})
	t.Cleanup(func() { _ = client.Close() })
	l := NewRedisLocker(client)
	ctx := context.Background()
	held, err := l.TryLock(ctx, "app:wx1", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	_, err = l.TryLock(ctx, "app:wx1", 10*time.Second)
	if err == nil || errors.Is(err, ErrNotAcquired) {
		t.Fatalf("TryLock with Redis down: %v; want an error that is not ErrNotAcquired", err)
	}
	if err := held.Unlock(ctx); err == nil {
		t.Fatal("Unlock with Redis down returned nil: the caller would believe the lock was released")
	}
}

func TestTryLockCancelledContext(t *testing.T) {
	_, l := newMiniLocker(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := l.TryLock(ctx, "app:wx1", 10*time.Second)
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrNotAcquired) {
		t.Fatalf("TryLock with a cancelled context: %v; want context.Canceled", err)
	}
}

// redsync reports ErrFailed when it set the key but too late for the ttl and
// removed it again; nobody holds the lock then.
func TestClassifySlowAcquireIsNotErrNotAcquired(t *testing.T) {
	if err := classify("app:wx1", redsync.ErrFailed); errors.Is(err, ErrNotAcquired) || !errors.Is(err, redsync.ErrFailed) {
		t.Fatalf("classify(ErrFailed) = %v; want a non-ErrNotAcquired error wrapping ErrFailed", err)
	}
	if err := classify("app:wx1", &redsync.ErrTaken{Nodes: []int{0}}); !errors.Is(err, ErrNotAcquired) {
		t.Fatalf("classify(ErrTaken) = %v; want ErrNotAcquired", err)
	}
}
