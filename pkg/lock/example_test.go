package lock_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/pkg/lock"
)

// A replica refreshes tokens only while it leads; the work stops as soon
// as the leading ctx is cancelled.
func ExampleElector() {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6380"})
	host, _ := os.Hostname()
	elector, err := lock.NewElector(lock.ElectorConfig{
		Client:        client,
		Name:          "tokenkeeper:leader",
		Identity:      fmt.Sprintf("%s-%d", host, os.Getpid()),
		LeaseDuration: 15 * time.Second,
		RenewDeadline: 10 * time.Second,
		RetryPeriod:   2 * time.Second,
		Callbacks: lock.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				ticker := time.NewTicker(time.Minute)
				defer ticker.Stop()
				for {
					select {
					case <-ctx.Done():
						return // lead lost or shutting down
					case <-ticker.C:
						// refresh tokens that are due, with fenced writes
					}
				}
			},
			OnNewLeader: func(identity string) { slog.Info("leader", "identity", identity) },
		},
	})
	if err != nil {
		slog.Error("bad election config", "err", err)
		return
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	// Cancelling ctx (e.g. on SIGTERM) stops the leading work and then
	// releases the lease, so a standby takes over at once.
	if err := elector.Run(ctx); err != nil {
		slog.Warn("leader lease not released; it will expire on its own", "err", err)
	}
}
