package tokencache

import "time"

// Known is what a process knows of an app's current token without asking
// Redis (Cache.Known).
type Known struct {
	Version     int64
	UsableUntil time.Time
	FetchedAt   time.Time
	// Confirmed is false when the token was only announced (a newer token
	// stored by another process, not read here yet): its times are the
	// announcement's, and this process does not hold its value.
	Confirmed bool
}

// Known reports, from memory only, the newest state of appID's token this
// process has seen: its near copy (kept by every read, write and
// announcement), or the newer token an announcement named. ok is false
// when the process has seen nothing of the app. A copy Redis no longer
// holds (the record gone or corrupt) is still reported: it is what the
// process would serve during an outage. It never does I/O, so a metrics scrape of
// 100,000 apps costs no Redis command.
func (a Admin) Known(appID string) (k Known, ok bool) {
	c := a.c
	v, found := c.apps.Load(appID)
	if !found {
		return Known{}, false
	}
	return v.(*appState).near.known()
}

// known is the near copy's part of Cache.Known.
func (n *nearCopy) known() (Known, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	e := n.cur.Load()
	if a := n.newer; a.rev > 0 && a.rev == n.rev && (e == nil || e.tok.Rev < n.rev) {
		return Known{Version: a.version, UsableUntil: time.UnixMilli(a.usableUntil), FetchedAt: time.UnixMilli(a.fetchedAt)}, true
	}
	if e == nil {
		return Known{}, false
	}
	return Known{Version: e.tok.Version, UsableUntil: e.tok.UsableUntil, FetchedAt: e.tok.FetchedAt, Confirmed: true}, true
}
