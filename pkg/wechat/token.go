package wechat

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"time"
)

// Token is one access token as WeChat issued it.
type Token struct {
	// Value is the access_token itself. Treat it as a credential: log
	// Fingerprint(Value), never Value.
	Value string
	// ExpiresIn is the lifetime WeChat announced (expires_in).
	ExpiresIn time.Duration
	// FetchedAt is when the request that returned this token was sent. A
	// token's life is counted from the send, not the reply, so a slow reply
	// never makes it look younger than it is.
	FetchedAt time.Time
	// IssuedAt is when WeChat answered, from the reply's Date header: the
	// upstream's own clock, to the second; zero if the reply had none.
	// Comparing two tokens' IssuedAt orders their mints without trusting
	// any of our clocks.
	IssuedAt time.Time
}

// Format prints the token's Fingerprint instead of its value, so a token
// put in a log line or an error by accident does not leak.
func (t Token) Format(f fmt.State, verb rune) {
	fmt.Fprintf(f, "wechat.Token{fingerprint:%s expires_in:%s fetched_at:%s}",
		Fingerprint(t.Value), t.ExpiresIn, t.FetchedAt.Format(time.RFC3339Nano))
}

// LogValue logs the token's Fingerprint instead of its value.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("fingerprint", Fingerprint(t.Value)),
		slog.Duration("expires_in", t.ExpiresIn),
		slog.Time("fetched_at", t.FetchedAt),
	)
}

// ExpiresAt is when WeChat stops accepting the token.
func (t Token) ExpiresAt() time.Time { return t.FetchedAt.Add(t.ExpiresIn) }

// Fingerprint returns a short, stable, non-reversible name for a token (or
// any credential) that is safe to log: the first 8 hex digits of its SHA-256.
func Fingerprint(value string) string {
	if value == "" {
		return "none"
	}
	sum := sha256.Sum256([]byte(value))
	return hex.EncodeToString(sum[:4])
}

// Mode says which upstream endpoint an app's tokens come from.
type Mode int

const (
	// Classic is GET /cgi-bin/token: every fetch mints a new token and
	// invalidates the previous one after the overlap window (5 minutes).
	Classic Mode = iota
	// Stable is POST /cgi-bin/stable_token in normal mode: concurrent callers
	// get the same token and cannot invalidate each other.
	Stable
)

func (m Mode) String() string {
	switch m {
	case Classic:
		return "classic"
	case Stable:
		return "stable"
	}
	return "unknown"
}

// ParseMode parses "classic" or "stable".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "classic", "":
		return Classic, nil
	case "stable":
		return Stable, nil
	}
	return 0, &ModeError{Value: s}
}

// ModeError reports an unknown token mode.
type ModeError struct{ Value string }

func (e *ModeError) Error() string {
	return "wechat: unknown token mode " + quote(e.Value) + ` (want "classic" or "stable")`
}

// Secret is an AppSecret. It formats as "[redacted]" with every fmt verb, in
// JSON and in slog, so it cannot leak through a log line or an error by
// accident; Reveal returns the value for the one place that sends it.
type Secret string

// Reveal returns the secret's value.
func (s Secret) Reveal() string { return string(s) }

func (s Secret) String() string   { return "[redacted]" }
func (s Secret) GoString() string { return `"[redacted]"` }

// Format covers the verbs String and GoString do not (%d, %t, %p, ...):
// without it fmt reports a bad verb by printing the raw value.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		io.WriteString(f, s.GoString())
		return
	}
	io.WriteString(f, s.String())
}

// MarshalText keeps the secret out of JSON, YAML and anything else that
// encodes text.
func (s Secret) MarshalText() ([]byte, error) { return []byte("[redacted]"), nil }

// LogValue keeps the secret out of slog output.
func (s Secret) LogValue() slogValue { return redactedLogValue() }

// QuotaDay returns the calendar day, in Beijing time (UTC+8), whose daily
// fetch quota covers t, formatted as YYYYMMDD. WeChat resets quotas at
// midnight Beijing time.
func QuotaDay(t time.Time) string { return t.In(beijing).Format("20060102") }

// NextQuotaReset returns the first Beijing midnight after t.
func NextQuotaReset(t time.Time) time.Time {
	b := t.In(beijing)
	y, m, d := b.Date()
	return time.Date(y, m, d+1, 0, 0, 0, 0, beijing)
}

var beijing = time.FixedZone("UTC+8", 8*60*60)
