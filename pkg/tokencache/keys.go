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
	// One allocation for all of them (they are kept for every app of a
	// fleet of 100,000): the names are cut from one string.
	base := appKeyBase(prefix, appID)
	suffixes := [...]string{"token", "intents", "version", "rev", "lock", "fetches:", "passive", "verdict:", "seen:", "pending", "hold"}
	n := len(suffixes) * len(base)
	for _, s := range suffixes {
		n += len(s)
	}
	var b strings.Builder
	b.Grow(n) // exactly: a short hint doubled the buffer (768 B per app instead of ~350)
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
		seen: names[8], pending: names[9], hold: names[10],
	}
}

// GatewayTokenKey is the key under which the WeChat-compatible gateway
// (internal/gateway) shares a token it handed out with its other replicas:
// tokenHash is the hex SHA-256 of the token (never the token itself). It
// names no app (the caller does not say which), so it carries no hash tag.
func GatewayTokenKey(prefix, tokenHash string) string { return prefix + "gateway:token:" + tokenHash }
