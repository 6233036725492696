package wechat

// Tests of unexported behaviour. Everything else is tested from package
// wechat_test, which can also use pkg/wechattest (that package imports this one).

import (
	"errors"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)

func TestErrmsgCleaned(t *testing.T) {
	body := `{"errcode":-1,"errmsg":"line1\nline2\u001b[31m` + strings.Repeat("z", 2000) + `"}`
	_, err := ParseTokenReply(EndpointToken, 200, []byte(body), t0)
	var we *Error
	if !errors.As(err, &we) {
		t.Fatalf("err = %v", err)
	}
	if strings.ContainsAny(we.Message, "\n\x1b") {
		t.Errorf("Message keeps control characters: %q", we.Message)
	}
	if !strings.HasPrefix(we.Message, "line1?line2?[31m") || !strings.HasSuffix(we.Message, "...") || len(we.Message) > maxMessageBytes+8 {
		t.Errorf("Message = %q (len %d), want cleaned and cut at %d bytes", we.Message[:40], len(we.Message), maxMessageBytes)
	}
}

func TestParseRedactsSecretBeforeTruncating(t *testing.T) {
	const secret = "0123456789abcdef0123456789abcdef"
	// The secret straddles the truncation point: cutting first would leave
	// half of it that redaction can no longer recognise.
	msg := strings.Repeat("y", maxMessageBytes-10) + secret + " tail"
	_, err := parseTokenReply(EndpointToken, 200, []byte(`{"errcode":40125,"errmsg":"`+msg+`"}`), t0, secret)
	if err == nil || strings.Contains(err.Error(), secret[:10]) {
		t.Fatalf("err = %v, leaks the start of the secret", err)
	}
}

// errmsg reaches 502 bodies, logs and `refresher status`: invisible or
// direction-changing characters (which can make a log line or a terminal
// lie) are replaced like control characters, and its length is bounded
// tighter than a reply.
func TestErrmsgFormatCharactersReplacedAndBounded(t *testing.T) {
	body := `{"errcode":-1,"errmsg":"busy\u202egnp.exe\u200b\u2028x` + strings.Repeat("é", 400) + `"}`
	_, err := ParseTokenReply(EndpointToken, 200, []byte(body), t0)
	var we *Error
	if !errors.As(err, &we) {
		t.Fatalf("err = %v", err)
	}
	if !strings.HasPrefix(we.Message, "busy?gnp.exe??x") {
		t.Errorf("Message = %.40q, want format and separator characters replaced", we.Message)
	}
	if len(we.Message) > 256+3 {
		t.Errorf("Message is %d bytes, want at most 256 and an ellipsis", len(we.Message))
	}
}

func TestHandBuiltErrorIsCleanedToo(t *testing.T) {
	e := &Error{Code: -1, Endpoint: EndpointToken, Message: "a\nb\u202e" + strings.Repeat("x", 1000)}
	if s := e.Error(); strings.ContainsAny(s, "\n\u202e") || len(s) > 400 {
		t.Fatalf("Error() = %.60q (%d bytes): want cleaned and bounded", s, len(s))
	}
}
