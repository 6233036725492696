package cli

import (
	"context"
	"log/slog"

	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/internal/refresher"
)

// Serve runs one replica until ctx is done (SIGINT/SIGTERM).
func Serve(ctx context.Context, cfg *config.Config, log *slog.Logger, opts ...refresher.Option) error {
	r, err := refresher.New(cfg, log, opts...)
	if err != nil {
		return err
	}
	return r.Run(ctx)
}
