package tokencache

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
	// hold: the fleet-wide hold after WeChat refused a fetch for a
	// configuration error ("errcode|endpoint|errmsg"), expiring with it.
	hold string
}

func appKeys(prefix, appID string) keys {
	base := appKeyBase(prefix, appID)
	return keys{
		record:   base + "token",
		intents:  base + "intents",
		version:  base + "version",
		rev:      base + "rev",
		lock:     base + "lock",
		budget:   base + "fetches:",
		passive:  base + "passive",
		verdicts: base + "verdict:",
		hold:     base + "hold",
	}
}
