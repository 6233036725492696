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

const recordTag = "tk1"

// maxTokenLen bounds what a record may hold: WeChat says to reserve 512
// characters; the client refuses anything over 2048.
const maxTokenLen = 2048

func encodeRecord(t Token) string {
	var b strings.Builder
	b.Grow(len(t.Value) + 80)
	b.WriteString(recordTag)
	for _, n := range [...]int64{t.Version, t.UsableUntil.UnixMilli(), t.RefreshAt.UnixMilli(), t.ExpiresAt.UnixMilli(), t.FetchedAt.UnixMilli(), unixMilliOrZero(t.IssuedAt)} {
		b.WriteByte('|')
		b.WriteString(strconv.FormatInt(n, 10))
	}
	b.WriteByte('|')
	b.WriteString(t.Value)
	return b.String()
}

// decodeRecord parses a stored record. The token in the result shares
// memory with s.
func decodeRecord(key, s string) (Token, error) {
	bad := func(reason string) (Token, error) {
		return Token{}, &CorruptRecordError{Key: key, Reason: reason}
	}
	rest, ok := strings.CutPrefix(s, recordTag+"|")
	if !ok {
		if len(s) > 12 {
			s = s[:12] + "..."
		}
		return bad("unknown format (starts with " + strconv.Quote(s) + ", want \"tk1|\")")
	}
	var nums [6]int64
	names := [6]string{"version", "usable_until", "refresh_at", "expires_at", "fetched_at", "issued_at"}
	for i := range nums {
		field, tail, ok := strings.Cut(rest, "|")
		if !ok {
			return bad("too few fields: no " + names[i] + " followed by the access_token")
		}
		n, err := strconv.ParseInt(field, 10, 64)
		if err != nil || n < 0 {
			return bad("field " + names[i] + " is not a non-negative integer")
		}
		nums[i] = n
		rest = tail
	}
	switch {
	case rest == "":
		return bad("empty access_token")
	case len(rest) > maxTokenLen:
		return bad("access_token longer than " + strconv.Itoa(maxTokenLen) + " bytes")
	case nums[0] == 0:
		return bad("version 0")
	case nums[1] > nums[3]:
		return bad("usable_until after expires_at")
	case nums[2] > nums[1]:
		return bad("refresh_at after usable_until")
	case nums[4] > nums[3]:
		return bad("fetched_at after expires_at")
	}
	if !printableASCII(rest) {
		return bad("access_token contains a byte outside printable ASCII")
	}
	tok := Token{
		Value:       rest,
		Version:     nums[0],
		UsableUntil: time.UnixMilli(nums[1]),
		RefreshAt:   time.UnixMilli(nums[2]),
		ExpiresAt:   time.UnixMilli(nums[3]),
		FetchedAt:   time.UnixMilli(nums[4]),
	}
	if nums[5] > 0 {
		tok.IssuedAt = time.UnixMilli(nums[5])
	}
	return tok, nil
}

// printableASCII reports whether s holds only the bytes '!' to '~': what
// WeChat's tokens are made of, and what a record can carry.
func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

// unixMilliOrZero is t in Unix milliseconds, 0 for the zero time ("unknown"
// in a record).
func unixMilliOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}
