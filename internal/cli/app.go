package cli

import (
	"slices"
	"strings"

	"github.com/tokenkeeper/tokenkeeper/internal/config"
)

// checkApp refuses, as bad usage, an APPID argument the configuration does
// not list. A configuration that lists no app (only the Redis settings,
// for a read-only command) accepts any: the cache checks its shape, and
// without a secret it can only read what is stored.
func checkApp(cfg *config.Config, app string) error {
	if len(cfg.Apps) > 0 && !slices.Contains(cfg.AppIDs(), app) {
		return usagef("unknown app %q: configured apps are %s", app, strings.Join(cfg.AppIDs(), ", "))
	}
	return nil
}
