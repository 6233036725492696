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
