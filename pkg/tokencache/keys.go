package tokencache

import "strings"

// The Redis key schema, in one place. Every key of an app carries the
// {appID} hash tag, so all of them live in one Cluster slot and every script
// can touch them together.

// RecordKey is the key of appID's token record under prefix (the record
// format is in the package doc and record.go).
func RecordKey(prefix, appID string) string { return appKeyBase(prefix, appID) + "token" }

// EventsChannel is the channel on which every change to a record under
// prefix is announced.
func EventsChannel(prefix string) string { return prefix + "events" }

func appKeyBase(prefix, appID string) string { return prefix + "{" + appID + "}:" }

// keys are the Redis keys of one app.
type keys struct {
	record   string // the token record
	intents  string // fetches in flight: sorted set of fetch id by deadline
	version  string // the version counter
	rev      string // the highest rev the record has had
	lock     string // the fetch lock
	budget   string // + YYYYMMDD (Beijing day): fetches started that day
	passive  string // passive-refresh fetches in the current rate window
	verdicts string // + token fingerprint: WeChat's verdict on a reported token
}

func appKeys(prefix, appID string) keys {
	// One allocation for all of them (they are kept for every app of a
	// fleet of 100,000): the names are cut from one string.
	base := appKeyBase(prefix, appID)
	suffixes := [...]string{"token", "intents", "version", "rev", "lock", "fetches:", "passive", "verdict:"}
	var b strings.Builder
	b.Grow(len(suffixes)*len(base) + 48)
	for _, s := range suffixes {
		b.WriteString(base)
		b.WriteString(s)
	}
	all := b.String()
	var names [len(suffixes)]string
	at := 0
	for i, s := range suffixes {
		names[i] = all[at : at+len(base)+len(s)]
		at += len(base) + len(s)
	}
	return keys{
		record: names[0], intents: names[1], version: names[2], rev: names[3],
		lock: names[4], budget: names[5], passive: names[6], verdicts: names[7],
	}
}
