package refresher

import (
	"strings"
	"testing"

	"github.com/tokenkeeper/tokenkeeper/internal/config"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// What a reload cannot apply is refused by name, never silently ignored:
// the gateway's settings, its apps and secrets, the scheduler, the series
// layout and an app's tickets.
func TestRestartOnlyNamesWhatAReloadCannotApply(t *testing.T) {
	base := func() *config.Config {
		return &config.Config{
			Apps:    []config.App{{ID: "wx0000000000000001", Secret: wechat.Secret("s1"), Tickets: []string{"jsapi"}}},
			Gateway: config.Gateway{Addr: "127.0.0.1:8090", MaxBody: 1},
		}
	}
	for _, tc := range []struct {
		name   string
		change func(c *config.Config)
		want   string
	}{
		{"gateway", func(c *config.Config) { c.Gateway.MaxBody = 2 }, "gateway"},
		{"scheduler", func(c *config.Config) { c.Scheduler.MaxConcurrent = 9 }, "scheduler"},
		{"series", func(c *config.Config) { c.Metrics.PerApp = "off" }, "metrics.per_app"},
		{"tickets", func(c *config.Config) { c.Apps[0].Tickets = nil }, "apps (wx0000000000000001).tickets"},
		{"secret under the gateway", func(c *config.Config) { c.Apps[0].Secret = "s2" }, "the gateway's apps and secrets"},
		{"app added under the gateway", func(c *config.Config) {
			c.Apps = append(c.Apps, config.App{ID: "wx0000000000000002", Secret: "s3"})
		}, "the gateway's apps and secrets"},
	} {
		b := base()
		tc.change(b)
		got := strings.Join(restartOnly(base(), b), ", ")
		if !strings.Contains(got, tc.want) {
			t.Errorf("%s: restartOnly = %q, want it to name %q", tc.name, got, tc.want)
		}
		if strings.Contains(got, "s1") || strings.Contains(got, "s2") {
			t.Errorf("%s: restartOnly shows a secret: %q", tc.name, got)
		}
	}
	// The gateway's credentials change live (a reload step revokes).
	g := base()
	g.Gateway.Credentials = []config.APIKey{{Name: "team-a", Key: "credential-of-team-a-0123", Apps: []string{"*"}}}
	if got := restartOnly(base(), g); len(got) != 0 {
		t.Errorf("a change of the gateway's credentials is refused: %v", got)
	}
	// Without the gateway, apps and secrets change live.
	a, b := base(), base()
	a.Gateway, b.Gateway = config.Gateway{}, config.Gateway{}
	b.Apps[0].Secret = "s2"
	b.Apps = append(b.Apps, config.App{ID: "wx0000000000000002", Secret: "s3"})
	if got := restartOnly(a, b); len(got) != 0 {
		t.Errorf("without the gateway a new secret and app are refused: %v", got)
	}
}
