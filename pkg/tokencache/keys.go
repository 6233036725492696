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

// LockKey is the key of appID's fetch lock under prefix: its TTL says for
// how long the holder keeps it.
func LockKey(prefix, appID string) string { return appKeys(prefix, appID).lock }

// IntentsKey is the key of appID's fetches in flight under prefix; with
// appID "*" it is the SCAN pattern of every app's.
func IntentsKey(prefix, appID string) string { return appKeys(prefix, appID).intents }

func appKeyBase(prefix, appID string) string { return prefix + "{" + appID + "}:" }

// TicketKeyPrefix is the key prefix of the ticket cache of kind
// (wechat.TicketJSAPI, wechat.TicketWxCard) under prefix: its records are
// RecordKey(TicketKeyPrefix(prefix, kind), appID), its channel
// EventsChannel(TicketKeyPrefix(prefix, kind)). Each kind, and each app,
// has keys of its own.
func TicketKeyPrefix(prefix, kind string) string { return prefix + "ticket:" + kind + ":" }

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
	seen     string // ticket caches: + ticket hash: when the fleet first saw that ticket (Unix ms)
	pending  string // ticket caches: the send time (Unix ms) of the earliest getticket whose reply is unknown
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
		seen:     base + "seen:",
		pending:  base + "pending",
		hold:     base + "hold",
	}
}

// GatewayTokenKey is the key under which the WeChat-compatible gateway
// (internal/gateway) shares a token it handed out with its other replicas:
// tokenHash is the hex SHA-256 of the token (never the token itself). It
// names no app (the caller does not say which), so it carries no hash tag.
func GatewayTokenKey(prefix, tokenHash string) string { return prefix + "gateway:token:" + tokenHash }
