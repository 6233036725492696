package tokencache

import (
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// Token is a token as the cache hands it out.
type Token struct {
	// Value is the access_token. Log wechat.Fingerprint(Value), never Value.
	Value string
	// Version increases with every token stored for the app (it restarts
	// only if Redis loses its data).
	Version int64
	// Rev increases with every change to the app's record: a store, a cap,
	// a restore. It orders what a process reads against what it is told,
	// so an older message never undoes a newer state. It is kept above the
	// writer's clock in milliseconds, so it keeps increasing across a
	// Redis data loss.
	Rev int64
	// UsableUntil is when the cache stops handing the token out: WeChat's
	// expiry minus the safety margin, or earlier when a fetch may have
	// invalidated it.
	UsableUntil time.Time
	// RefreshAt is when a refresh becomes due.
	RefreshAt time.Time
	// ExpiresAt is WeChat's own expiry.
	ExpiresAt time.Time
	// FetchedAt is when the request that minted the token was sent.
	FetchedAt time.Time
	// IssuedAt is when WeChat answered, by WeChat's clock (its Date header),
	// to the second; zero if unknown. It orders mints between processes.
	IssuedAt time.Time
}

// ExpiresIn is the usable life left at now, never negative.
func (t Token) ExpiresIn(now time.Time) time.Duration {
	d := t.UsableUntil.Sub(now)
	if d < 0 {
		return 0
	}
	return d
}

// String, Format and LogValue show the token's fingerprint, never its value,
// so a Token printed or logged by accident leaks nothing.
func (t Token) String() string {
	return "tokencache.Token{" + wechat.Fingerprint(t.Value) + " v" + strconv.FormatInt(t.Version, 10) +
		" usable until " + t.UsableUntil.UTC().Format(time.RFC3339) + "}"
}

// Format implements fmt.Formatter so every verb, %#v and %d included,
// prints String.
func (t Token) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, t.String()) }

// LogValue implements slog.LogValuer.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(slog.String("fingerprint", wechat.Fingerprint(t.Value)), slog.Int64("version", t.Version),
		slog.Time("usable_until", t.UsableUntil))
}

// The record grammar, written once here for Go and once in luaPrelude
// (scripts.go) for Redis; FuzzRecordGrammar proves the two accept the same
// language and read the same fields.
//
//	record  = "tk2" 7("|" number) "|" token
//	number  = "0" / %x31-39 *14DIGIT      ; canonical, at most 15 digits (exact in Lua's doubles)
//	token   = 1*2048(%x21-7B / %x7D-7E)   ; printable ASCII without '|'
//
// The numbers are, in order: version, rev, usable_until, refresh_at,
// expires_at, fetched_at, issued_at (times in Unix ms, issued_at 0 for
// unknown), and a record is valid only if version >= 1, rev >= 1,
// refresh_at <= usable_until <= expires_at, fetched_at <= expires_at, and
// expires_at - fetched_at <= maxTokenLife.
const recordTag = RecordTag

// RecordTag starts every record of the format this package reads and
// writes.
const RecordTag = "tk2"

// RecordFields names a record's numbers in order, between the tag and the
// token: for a tool that edits records field by field (the chaos run's
// poison), which must split values the decoder refuses.
func RecordFields() []string { return append([]string(nil), recordFields[:]...) }

// maxTokenLen bounds what a record may hold: WeChat says to reserve 512
// characters; the client refuses anything over 2048.
const maxTokenLen = 2048

// maxTokenLife bounds a token's life (expires_at - fetched_at): no upstream
// grants more, and a record claiming more is corrupt.
const maxTokenLife = 24 * time.Hour

// maxRecordLen is the longest valid record.
const maxRecordLen = len(recordTag) + len(recordFields)*(maxNumberDigits+1) + 1 + maxTokenLen

// maxNumberDigits keeps every record number exact in Lua, whose numbers are
// doubles (2^53 has 16 digits).
const maxNumberDigits = 15

// recordFields names a record's numbers in order.
var recordFields = [...]string{"version", "rev", "usable_until", "refresh_at", "expires_at", "fetched_at", "issued_at"}

// EncodeRecord is t as a stored record (the grammar above).
func EncodeRecord(t Token) string {
	var b strings.Builder
	b.Grow(len(t.Value) + 120)
	b.WriteString(recordTag)
	for _, n := range [...]int64{t.Version, t.Rev, t.UsableUntil.UnixMilli(), t.RefreshAt.UnixMilli(), t.ExpiresAt.UnixMilli(), t.FetchedAt.UnixMilli(), unixMilliOrZero(t.IssuedAt)} {
		b.WriteByte('|')
		b.WriteString(strconv.FormatInt(n, 10))
	}
	b.WriteByte('|')
	b.WriteString(t.Value)
	return b.String()
}

// DecodeRecord parses a stored record (see the grammar above); key only
// names it in the error, a *CorruptRecordError. The token in the result
// shares memory with s.
func DecodeRecord(key, s string) (Token, error) {
	bad := func(reason string) (Token, error) {
		return Token{}, &CorruptRecordError{Key: key, Reason: reason}
	}
	rest, ok := strings.CutPrefix(s, recordTag+"|")
	if !ok {
		if len(s) > 12 {
			s = s[:12] + "..."
		}
		return bad("unknown format (starts with " + strconv.Quote(s) + ", want \"" + recordTag + "|\")")
	}
	var nums [len(recordFields)]int64
	for i := range nums {
		field, tail, ok := strings.Cut(rest, "|")
		if !ok {
			return bad("too few fields: no " + recordFields[i] + " followed by the access_token")
		}
		n, ok := parseRecordNumber(field)
		if !ok {
			return bad("field " + recordFields[i] + " is not a canonical decimal of 1 to " + strconv.Itoa(maxNumberDigits) + " digits")
		}
		nums[i] = n
		rest = tail
	}
	version, rev, usable, refresh, expires, fetched, issued := nums[0], nums[1], nums[2], nums[3], nums[4], nums[5], nums[6]
	switch {
	case rest == "":
		return bad("empty access_token")
	case len(rest) > maxTokenLen:
		return bad("access_token longer than " + strconv.Itoa(maxTokenLen) + " bytes")
	case !tokenBytes(rest):
		return bad("access_token contains a byte outside printable ASCII, or a '|'")
	case version == 0:
		return bad("version 0")
	case rev == 0:
		return bad("rev 0")
	case refresh > usable:
		return bad("refresh_at after usable_until")
	case usable > expires:
		return bad("usable_until after expires_at")
	case fetched > expires:
		return bad("fetched_at after expires_at")
	case expires-fetched > maxTokenLife.Milliseconds():
		return bad("expires_at more than " + maxTokenLife.String() + " after fetched_at")
	}
	tok := Token{
		Value:       rest,
		Version:     version,
		Rev:         rev,
		UsableUntil: time.UnixMilli(usable),
		RefreshAt:   time.UnixMilli(refresh),
		ExpiresAt:   time.UnixMilli(expires),
		FetchedAt:   time.UnixMilli(fetched),
	}
	if issued > 0 {
		tok.IssuedAt = time.UnixMilli(issued)
	}
	return tok, nil
}

// parseRecordNumber reads a grammar number: "0", or 1 to maxNumberDigits
// digits without a leading zero, so every number has one spelling and the
// scripts may compare them as strings.
func parseRecordNumber(s string) (int64, bool) {
	if s == "" || len(s) > maxNumberDigits || len(s) > 1 && s[0] == '0' {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// tokenBytes reports whether s holds only what a record's token may: the
// printable ASCII bytes '!' to '~' except '|'.
func tokenBytes(s string) bool { return badTokenByte(s) < 0 }

// badTokenByte is the offset of the first byte of s a record's token may
// not hold, or -1.
func badTokenByte(s string) int {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' || c == '|' {
			return i
		}
	}
	return -1
}

// unixMilliOrZero is t in Unix milliseconds, 0 for the zero time ("unknown"
// in a record).
func unixMilliOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}
