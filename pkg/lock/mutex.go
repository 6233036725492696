package lock

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-redsync/redsync/v4"
	redsyncredis "github.com/go-redsync/redsync/v4/redis"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/redis/go-redis/v9"
)

// ErrNotAcquired means the lock is held by someone else. It is not a failure
// of Redis: the caller should wait for the holder's result, not retry hard.
var ErrNotAcquired = errors.New("lock: held by another holder")

// Locker takes named, expiring locks. Implementations are safe for
// concurrent use.
type Locker interface {
	// TryLock makes one attempt to take the lock called name for ttl. It
	// returns ErrNotAcquired if another holder has it, and another error if
	// the lock service could not be asked.
	TryLock(ctx context.Context, name string, ttl time.Duration) (Lock, error)
}

// Lock is a held lock.
type Lock interface {
	// Unlock releases the lock if it is still ours. Releasing a lock that
	// already expired is not an error worth acting on: it returns nil.
	Unlock(ctx context.Context) error
	// Until is when the lock expires unless released first, minus redsync's
	// allowance for clock drift.
	Until() time.Time
}

// RedisLocker is a Locker on one Redis deployment (standalone, Sentinel or
// Cluster, through redis.UniversalClient), or on several independent
// masters (Redlock).
type RedisLocker struct {
	rs *redsync.Redsync
}

// NewRedisLocker returns a Locker backed by client and, if given, more
// clients. With several, each must reach an independent Redis master: a
// lock is taken when a majority of them granted it within its validity
// (redsync's Redlock quorum), so losing a minority of the masters loses
// no lock and stops no fetch; losing a majority makes every TryLock fail
// with a Redis error (not ErrNotAcquired).
func NewRedisLocker(client redis.UniversalClient, more ...redis.UniversalClient) *RedisLocker {
	return &RedisLocker{rs: redsync.New(pools(append([]redis.UniversalClient{client}, more...))...)}
}

// pools wraps each client as a redsync pool.
func pools(clients []redis.UniversalClient) []redsyncredis.Pool {
	ps := make([]redsyncredis.Pool, len(clients))
	for i, c := range clients {
		ps[i] = goredis.NewPool(c)
	}
	return ps
}

// TryLock implements Locker.
func (l *RedisLocker) TryLock(ctx context.Context, name string, ttl time.Duration) (Lock, error) {
	m := l.rs.NewMutex(name, redsync.WithExpiry(ttl), redsync.WithTries(1), redsync.WithTimeoutFactor(attemptTimeoutFactor(ttl)))
	if err := m.TryLockContext(ctx); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("lock: acquire %q: %w", name, ctx.Err())
		}
		return nil, classify(name, err)
	}
	return &redisLock{m: m}, nil
}

// attemptTimeoutFactor sizes how long one attempt may wait for Redis, as a
// fraction of the lock's TTL. redsync's default, 5%, is 75 ms for a 1.5 s
// lock: a Redis that is merely busy would look down. Allow a second, but
// never more than half the TTL, or the lock could expire before we know we
// hold it.
func attemptTimeoutFactor(ttl time.Duration) float64 {
	return min(0.5, max(0.05, float64(time.Second)/float64(ttl)))
}

type redisLock struct{ m *redsync.Mutex }

func (l *redisLock) Until() time.Time { return l.m.Until() }

func (l *redisLock) Unlock(ctx context.Context) error {
	_, err := l.m.UnlockContext(ctx)
	if err == nil || errors.Is(err, redsync.ErrLockAlreadyExpired) {
		return nil
	}
	var taken *redsync.ErrTaken
	if errors.As(err, &taken) {
		// Someone else holds it now: ours expired. Nothing to release.
		return nil
	}
	return fmt.Errorf("lock: release %q: %w", l.m.Name(), err)
}

// classify turns redsync's errors into ErrNotAcquired (someone holds the
// lock) or a wrapped Redis error (we could not find out).
func classify(name string, err error) error {
	var taken *redsync.ErrTaken
	var nodeTaken *redsync.ErrNodeTaken
	var redisErr *redsync.RedisError
	switch {
	case errors.As(err, &redisErr):
		return fmt.Errorf("lock: acquire %q: %w", name, redisErr.Err)
	case errors.As(err, &taken), errors.As(err, &nodeTaken):
		return fmt.Errorf("lock: acquire %q: %w", name, ErrNotAcquired)
	case errors.Is(err, redsync.ErrFailed):
		// With one try, redsync says ErrFailed when it did set the key but
		// Redis answered so late that the ttl was (nearly) spent, and it
		// released it again: nobody holds the lock, so it is not
		// ErrNotAcquired (a caller would wait for a holder that is not there).
		return fmt.Errorf("lock: acquire %q: Redis answered too slowly for the lock's ttl: %w", name, err)
	}
	return fmt.Errorf("lock: acquire %q: %w", name, err)
}
