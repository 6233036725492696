package chaos

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
)

// The poison-record fault mutates the live record by field name. The key
// is tokencache's; the field order is checked against tokencache's own
// encoder by TestRecordLayoutIsTokencaches, so the two cannot drift.

// recordKey is the Redis key of app's token record.
func recordKey(prefix, app string) string { return tokencache.RecordKey(prefix, app) }

// recordLayouts names the numeric fields of the record format, between the
// tag and the token (the token is last, and never holds a '|'). It splits
// malformed values too, which tokencache.DecodeRecord refuses to read.
var recordLayouts = map[string][]string{tokencache.RecordTag: tokencache.RecordFields()}

// liveRecord is a record split into its fields, to be mutated by name.
type liveRecord struct {
	tag    string
	names  []string
	fields map[string]string
	token  string
}

func parseRecord(s string) (*liveRecord, error) {
	tag, _, _ := strings.Cut(s, "|")
	names, ok := recordLayouts[tag]
	if !ok {
		return nil, fmt.Errorf("record format %q unknown (want %s)", tag, tokencache.RecordTag)
	}
	parts := strings.SplitN(s, "|", len(names)+2)
	if len(parts) != len(names)+2 {
		return nil, fmt.Errorf("record %s: %d fields, want %d", tag, len(parts), len(names)+2)
	}
	rec := &liveRecord{tag: tag, names: names, fields: map[string]string{}, token: parts[len(parts)-1]}
	for i, n := range names {
		rec.fields[n] = parts[i+1]
	}
	return rec, nil
}

func (rec *liveRecord) String() string {
	var b strings.Builder
	b.WriteString(rec.tag)
	for _, n := range rec.names {
		b.WriteByte('|')
		b.WriteString(rec.fields[n])
	}
	b.WriteByte('|')
	b.WriteString(rec.token)
	return b.String()
}

func (rec *liveRecord) ms(name string) (int64, error) {
	return strconv.ParseInt(rec.fields[name], 10, 64)
}

func (rec *liveRecord) setMs(name string, v int64) { rec.fields[name] = strconv.FormatInt(v, 10) }

// tokenOfRecord is the access_token a stored value carries ("" if the
// value is no record this run knows).
func tokenOfRecord(s string) string {
	rec, err := parseRecord(s)
	if err != nil {
		return ""
	}
	return rec.token
}

// mutation makes one kind of malformed record out of a live one.
type mutation struct {
	name  string
	apply func(rec *liveRecord, now time.Time) (string, error)
}

// mutations is every malformed record a poison-record fault writes, in the
// order successive poisoned records walk through them (the short run's
// three apps get the first three).
var mutations = []mutation{
	{"token-with-space", func(rec *liveRecord, _ time.Time) (string, error) {
		rec.token = rec.token[:len(rec.token)/2] + " " + rec.token[len(rec.token)/2:]
		return rec.String(), nil
	}},
	{"issued-at-20-digits", func(rec *liveRecord, _ time.Time) (string, error) {
		rec.fields["issued_at"] = "12345678901234567890" // > 2^63-1
		return rec.String(), nil
	}},
	{"usable-until-past", func(rec *liveRecord, now time.Time) (string, error) {
		u := now.Add(-time.Second).UnixMilli()
		rec.setMs("usable_until", u)
		if r, err := rec.ms("refresh_at"); err != nil || r > u {
			rec.setMs("refresh_at", u)
		}
		return rec.String(), nil
	}},
	{"not-a-record", func(*liveRecord, time.Time) (string, error) {
		return "GARBAGE written by the chaos run: not a token record", nil
	}},
	{"token-with-control-byte", func(rec *liveRecord, _ time.Time) (string, error) {
		rec.token = rec.token[:len(rec.token)/2] + "\x07" + rec.token[len(rec.token)/2:]
		return rec.String(), nil
	}},
	{"token-over-2048-bytes", func(rec *liveRecord, _ time.Time) (string, error) {
		rec.token += strings.Repeat("A", max(0, 2100-len(rec.token)))
		return rec.String(), nil
	}},
	{"version-zero", func(rec *liveRecord, _ time.Time) (string, error) {
		rec.fields["version"] = "0"
		return rec.String(), nil
	}},
	{"refresh-after-usable", func(rec *liveRecord, _ time.Time) (string, error) {
		u, err := rec.ms("usable_until")
		if err != nil {
			return "", err
		}
		rec.setMs("refresh_at", u+1000)
		return rec.String(), nil
	}},
	{"usable-after-expires", func(rec *liveRecord, _ time.Time) (string, error) {
		e, err := rec.ms("expires_at")
		if err != nil {
			return "", err
		}
		rec.setMs("usable_until", e+1000)
		return rec.String(), nil
	}},
	{"usable-until-far-future", func(rec *liveRecord, now time.Time) (string, error) {
		// Consistent in itself, but no WeChat token lives 48 hours.
		far := now.Add(48 * time.Hour).UnixMilli()
		rec.setMs("usable_until", far)
		rec.setMs("expires_at", far)
		return rec.String(), nil
	}},
}

// poisonValue is what mutation m makes of the live record.
func poisonValue(live string, m mutation, now time.Time) (string, error) {
	rec, err := parseRecord(live)
	if err != nil {
		return "", err
	}
	if rec.token == "" {
		return "", errors.New("live record has an empty token")
	}
	v, err := m.apply(rec, now)
	if err != nil {
		return "", fmt.Errorf("mutation %s: %w", m.name, err)
	}
	if v == live {
		return "", fmt.Errorf("mutation %s left the record unchanged", m.name)
	}
	return v, nil
}
