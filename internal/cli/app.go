package cli

import (
	"slices"
	"strings"

	"github.com/tokenkeeper/tokenkeeper/internal/config"
)

// checkApp refuses, as bad usage, an APPID argument the configuration does
// not list.
func checkApp(cfg *config.Config, app string) error {
	if !slices.Contains(cfg.AppIDs(), app) {
		return usagef("unknown app %q: configured apps are %s", app, strings.Join(cfg.AppIDs(), ", "))
	}
	return nil
}
