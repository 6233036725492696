package metrics

import (
	"time"

	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
)

// Knower tells, from memory, what a process knows of an app's token;
// tokencache.Admin is one (Known: its near copy, kept exact by reads,
// writes and announcements).
type Knower interface {
	Known(appID string) (tokencache.Known, bool)
}

// KnownSource is a source for SetAppSource that reads every app's state
// from k's memory: a scrape sends no Redis command, whatever the fleet's
// size. An app k knows nothing of is Unknown, not a token of 0 s; the
// fleet-wide fetch count of the day lives in Redis, so FetchesToday is
// left out (-1). apps gives the apps configured now (a reload changes
// them); now is the clock (nil: time.Now).
func KnownSource(k Knower, apps func() []string, now func() time.Time) func() []AppGauge {
	if now == nil {
		now = time.Now
	}
	return func() []AppGauge {
		apps := apps()
		t := now()
		out := make([]AppGauge, len(apps))
		for i, app := range apps {
			g := &out[i]
			g.AppID, g.FetchesToday = app, -1
			known, ok := k.Known(app)
			switch {
			case !ok:
				g.Unknown = true
			case t.Before(known.UsableUntil):
				g.HasToken = true
				g.UsableFor = known.UsableUntil.Sub(t)
				g.Age = t.Sub(known.FetchedAt)
			}
		}
		return out
	}
}
