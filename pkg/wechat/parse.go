package wechat

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Limits a token-endpoint reply must respect.
const (
	// MaxReplyBytes is the largest reply body accepted. A real reply is
	// about 200 bytes; anything near this is a proxy's error page or worse.
	MaxReplyBytes = 64 << 10
	// MaxTokenBytes bounds access_token. WeChat asks callers to reserve 512
	// characters; 2048 leaves room for growth without accepting garbage.
	MaxTokenBytes = 2048
	// MaxExpiresIn bounds expires_in. WeChat announces at most 7200 s; a day
	// is generous, and a larger value would keep a token cached long after
	// WeChat dropped it.
	MaxExpiresIn = 24 * time.Hour
)

// maxMessageBytes bounds errmsg as it appears in an *Error: errmsg ends up
// in logs, 502 bodies and `refresher status`, so a hostile or broken
// upstream must not fill them. WeChat's own messages (with their "rid:"
// and help link) stay well under it.
const maxMessageBytes = 256

// ReplyError is a reply that is not a valid answer: bad HTTP status, too
// large, not JSON, or a token or expires_in that fails validation. The
// request reached the upstream, so a classic fetch may have minted a token
// whose value we never learned: it matches ErrMalformedReply, ErrTransient
// and ErrOutcomeUnknown.
type ReplyError struct {
	Endpoint string // path of the API, never a full URL
	Status   int    // HTTP status, 0 if unknown (CheckBusinessReply)
	Reason   string // what was wrong; never contains body content
}

func (e *ReplyError) Error() string {
	s := "wechat: " + e.Endpoint + ": malformed reply"
	if e.Status != 0 {
		s += " (HTTP " + strconv.Itoa(e.Status) + ")"
	}
	return s + ": " + e.Reason
}

// Is reports whether target is ErrMalformedReply, ErrTransient or
// ErrOutcomeUnknown.
func (e *ReplyError) Is(target error) bool {
	return target == ErrMalformedReply || target == ErrTransient || target == ErrOutcomeUnknown
}

// ParseTokenReply validates one reply of a token endpoint (EndpointToken or
// EndpointStableToken) and returns the token it carries, stamped with
// fetchedAt (when the request was sent).
//
// It returns *Error for a non-zero errcode and *ReplyError for anything else
// that is not a valid token reply; it never returns a token together with an
// error, and never a token that breaks a rule (non-empty printable ASCII
// without spaces, at most MaxTokenBytes; 0 < expires_in <= MaxExpiresIn).
func ParseTokenReply(endpoint string, status int, body []byte, fetchedAt time.Time) (Token, error) {
	return parseTokenReply(endpoint, status, body, fetchedAt, "")
}

// parseTokenReply is ParseTokenReply that also removes secret from errmsg
// before bounding its length, so a secret cut in two by truncation cannot
// slip through half-redacted.
func parseTokenReply(endpoint string, status int, body []byte, fetchedAt time.Time, secret string) (Token, error) {
	return parseCredentialReply(endpoint, "access_token", status, body, fetchedAt, secret)
}

// ParseTicketReply validates one reply of EndpointTicket and returns the
// ticket it carries as a Token (Value is the ticket), stamped with
// fetchedAt. The rules are ParseTokenReply's, read from the "ticket" field:
// an empty, missing or malformed ticket is a *ReplyError (never a Token),
// and 40001/40014/42001 are *Error matching ErrTokenInvalid (the access
// token sent was refused, not the ticket).
func ParseTicketReply(status int, body []byte, fetchedAt time.Time) (Token, error) {
	return parseCredentialReply(EndpointTicket, "ticket", status, body, fetchedAt, "")
}

// parseCredentialReply validates a reply carrying one credential in field
// and its expires_in; secret (the AppSecret or the access token sent) is
// removed from errmsg.
func parseCredentialReply(endpoint, field string, status int, body []byte, fetchedAt time.Time, secret string) (Token, error) {
	malformed := func(format string, args ...any) (Token, error) {
		return Token{}, &ReplyError{Endpoint: endpoint, Status: status, Reason: fmt.Sprintf(format, args...)}
	}
	if status < 200 || status > 299 {
		return malformed("HTTP status %d, want 2xx", status)
	}
	fields, err := decodeObject(body)
	if err != nil {
		return malformed("%s", err.reason)
	}
	if apiErr, reason := errcodeOf(endpoint, fields, secret); reason != "" {
		return malformed("%s", reason)
	} else if apiErr != nil {
		return Token{}, apiErr
	}

	raw, ok := fields[field]
	if !ok {
		return malformed("%s missing", field)
	}
	var value string
	if kind := jsonKind(raw); kind != "string" {
		return malformed("%s is %s, want string", field, article(kind))
	}
	if err := json.Unmarshal(raw, &value); err != nil {
		return malformed("%s is not a valid JSON string", field)
	}
	if reason := checkTokenValue(value); reason != "" {
		return malformed("%s %s", field, reason)
	}

	raw, ok = fields["expires_in"]
	if !ok {
		return malformed("expires_in missing")
	}
	seconds, reason := jsonInt(raw)
	if reason != "" {
		return malformed("expires_in %s", reason)
	}
	if seconds <= 0 {
		return malformed("expires_in is %d, want > 0", seconds)
	}
	if seconds > int64(MaxExpiresIn/time.Second) {
		return malformed("expires_in is %d s, over the %d s (24 h) limit", seconds, int64(MaxExpiresIn/time.Second))
	}
	return Token{Value: value, ExpiresIn: time.Duration(seconds) * time.Second, FetchedAt: fetchedAt}, nil
}

// CheckBusinessReply inspects the reply of a business API (anything but the
// token endpoints) for an errcode. It returns *Error{Endpoint: endpoint} for
// a non-zero errcode (40001, 40014 and 42001 match ErrTokenInvalid), nil when
// errcode is 0 or absent, and *ReplyError when body is not JSON or errcode
// is not an integer. Only the errcode decides; errmsg is informational.
func CheckBusinessReply(endpoint string, body []byte) error {
	fields, perr := decodeJSON(body)
	if perr != nil {
		return &ReplyError{Endpoint: endpoint, Reason: perr.reason}
	}
	if fields == nil { // valid JSON but not an object: no errcode to read
		return nil
	}
	apiErr, reason := errcodeOf(endpoint, fields, "")
	if reason != "" {
		return &ReplyError{Endpoint: endpoint, Reason: reason}
	}
	if apiErr != nil {
		return apiErr
	}
	return nil
}

type parseError struct{ reason string }

// decodeObject decodes body, which must be a JSON object, into its fields.
func decodeObject(body []byte) (map[string]json.RawMessage, *parseError) {
	fields, err := decodeJSON(body)
	if err != nil {
		return nil, err
	}
	if fields == nil {
		return nil, &parseError{"body is " + article(jsonKind(bytes.TrimSpace(body))) + ", want a JSON object"}
	}
	return fields, nil
}

// decodeJSON checks that body is one JSON value of bounded size and returns
// its fields if it is an object (nil if it is another kind of value).
// A map, unlike a struct, matches keys exactly: "ACCESS_TOKEN" is not
// access_token.
func decodeJSON(body []byte) (map[string]json.RawMessage, *parseError) {
	if len(body) > MaxReplyBytes {
		return nil, &parseError{fmt.Sprintf("body exceeds %d bytes", MaxReplyBytes)}
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		if len(body) == 0 {
			return nil, &parseError{"body is empty, want JSON"}
		}
		return nil, &parseError{"body is only whitespace, want JSON"}
	}
	if !json.Valid(trimmed) {
		return nil, &parseError{"body is not JSON: " + syntaxProblem(trimmed)}
	}
	if trimmed[0] != '{' {
		return nil, nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(trimmed, &fields); err != nil {
		// json.Valid accepted it, so this is not expected; say so without
		// echoing the body.
		return nil, &parseError{"body is a JSON object that could not be decoded"}
	}
	return fields, nil
}

// syntaxProblem describes why body is not JSON without quoting more than the
// single offending character, so an echoed secret or token cannot leak.
func syntaxProblem(body []byte) string {
	if body[0] == '<' {
		return "starts with '<' (an HTML or XML page?)"
	}
	var v any
	err := json.Unmarshal(body, &v)
	var syn *json.SyntaxError
	switch {
	case err == nil:
		return "undecodable"
	case strings.Contains(err.Error(), "unexpected end of JSON input"):
		return fmt.Sprintf("truncated after %d bytes", len(body))
	case asSyntaxError(err, &syn):
		return fmt.Sprintf("invalid syntax at byte offset %d", syn.Offset)
	}
	return "invalid syntax"
}

func asSyntaxError(err error, target **json.SyntaxError) bool {
	se, ok := err.(*json.SyntaxError)
	if ok {
		*target = se
	}
	return ok
}

// errcodeOf returns the *Error for a non-zero errcode in fields, or a reason
// why errcode is unusable. Both are zero when errcode is absent or 0.
func errcodeOf(endpoint string, fields map[string]json.RawMessage, secret string) (*Error, string) {
	raw, ok := fields["errcode"]
	if !ok {
		return nil, ""
	}
	code, reason := jsonInt(raw)
	if reason != "" {
		return nil, "errcode " + reason
	}
	if code == 0 {
		return nil, ""
	}
	if code != int64(int(code)) || code > 1<<31-1 || code < -(1<<31) {
		return nil, fmt.Sprintf("errcode %d is out of range", code)
	}
	var msg string
	if m, ok := fields["errmsg"]; ok && jsonKind(m) == "string" {
		_ = json.Unmarshal(m, &msg) // valid JSON string: cannot fail
	}
	return &Error{Code: int(code), Message: cleanMessage(msg, secret), Endpoint: endpoint}, ""
}

// jsonInt reads raw as an integer literal. It returns a reason (starting
// with "is") when raw is not one.
func jsonInt(raw json.RawMessage) (int64, string) {
	raw = bytes.TrimSpace(raw)
	if kind := jsonKind(raw); kind != "number" {
		return 0, "is " + article(kind) + ", want an integer"
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
			return 0, "is out of range"
		}
		return 0, "is not an integer"
	}
	return n, ""
}

// checkTokenValue returns why value cannot be an access token, or "".
// It names positions and byte values, never the token itself.
func checkTokenValue(value string) string {
	if value == "" {
		return "is empty"
	}
	if len(value) > MaxTokenBytes {
		return fmt.Sprintf("is %d bytes, over the %d-byte limit", len(value), MaxTokenBytes)
	}
	for i := 0; i < len(value); i++ {
		b := value[i]
		switch {
		case b == ' ' || b == '\t' || b == '\n' || b == '\r' || b == '\v' || b == '\f':
			return fmt.Sprintf("contains whitespace (byte 0x%02x) at offset %d", b, i)
		case b < 0x20 || b == 0x7f:
			return fmt.Sprintf("contains a control character (byte 0x%02x) at offset %d", b, i)
		case b > 0x7e:
			return fmt.Sprintf("contains a non-ASCII byte 0x%02x at offset %d", b, i)
		}
	}
	return ""
}

// jsonKind names the kind of the JSON value raw (which must be valid JSON).
func jsonKind(raw []byte) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

func article(kind string) string {
	switch kind {
	case "null", "nothing":
		return kind
	case "object", "array":
		return "an " + kind
	}
	return "a " + kind
}

// cleanMessage prepares errmsg for an error string, the one place it is
// sanitised: the secret replaced; every character that is not printable
// (control characters: log injection; format characters such as U+202E,
// which reverse the text after them, and zero-width ones; line and
// paragraph separators) replaced by '?'; length bounded to
// maxMessageBytes, cut at a character boundary.
func cleanMessage(msg, secret string) string {
	msg = redact(msg, secret)
	var b strings.Builder
	for _, r := range msg {
		if b.Len()+utf8.RuneLen(r) > maxMessageBytes {
			b.WriteString("...")
			break
		}
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			b.WriteByte('?')
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

const redacted = "[redacted]"

// redact removes secret from s, in the forms it travels in: raw, and as
// escaped in a URL query.
func redact(s, secret string) string {
	if secret == "" {
		return s
	}
	s = strings.ReplaceAll(s, secret, redacted)
	if q := queryEscape(secret); q != secret {
		s = strings.ReplaceAll(s, q, redacted)
	}
	return s
}
