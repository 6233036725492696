package backend

import (
	"errors"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/pkg/lock"
	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
)

// Locks are the clients of cfg's independent lock masters
// (redis.lock_addrs), on which the fetch locks and the leader lease then
// live, each taken on a majority (Redlock). Without lock_addrs a Locks
// holds nothing and changes nothing: the lock and the lease stay on the
// data Redis.
type Locks struct{ clients []redis.UniversalClient }

// NewLocks opens a client per lock master. It connects lazily.
func NewLocks(cfg *config.Config) *Locks {
	l := &Locks{}
	for _, o := range cfg.LockOptions() {
		l.clients = append(l.clients, redis.NewClient(o))
	}
	return l
}

// CacheOptions has the cache take its fetch locks on the lock masters.
func (l *Locks) CacheOptions() []tokencache.Option {
	if l == nil || len(l.clients) == 0 {
		return nil
	}
	return []tokencache.Option{tokencache.WithLocker(lock.NewRedisLocker(l.clients[0], l.clients[1:]...))}
}

// Elector puts the lease of ec on the lock masters.
func (l *Locks) Elector(ec lock.ElectorConfig) lock.ElectorConfig {
	if l != nil && len(l.clients) > 0 {
		ec.Quorum = l.clients
	}
	return ec
}

// Close closes the lock masters' clients.
func (l *Locks) Close() error {
	if l == nil {
		return nil
	}
	var errs []error
	for _, c := range l.clients {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// LocksOf returns the Locks of a client Open returned, nil if it has none
// (a nil *Locks changes nothing).
func LocksOf(client redis.UniversalClient) *Locks {
	if c, ok := client.(clientWithLocks); ok {
		return c.locks
	}
	return nil
}

// clientWithLocks is the data Redis's client that also closes the lock
// masters' clients, so that Open's callers close one client as before.
type clientWithLocks struct {
	redis.UniversalClient
	locks *Locks
}

func (c clientWithLocks) Close() error {
	return errors.Join(c.UniversalClient.Close(), c.locks.Close())
}
