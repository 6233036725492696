package wechat_test

import (
	"errors"
	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
	"strconv"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)

// malformedCase is one reply that must be rejected as *wechat.ReplyError. The same
// table runs through wechat.ParseTokenReply directly and through the client against
// a server, for both endpoints.
type malformedCase struct {
	name   string
	status int
	body   string
	reason string // substring of wechat.ReplyError.Reason
}

var malformedCases = []malformedCase{
	{"status 502 with HTML", 502, "<html><body>502 Bad Gateway</body></html>", "HTTP status 502"},
	{"status 500 with valid token JSON", 500, `{"access_token":"TOKEN","expires_in":7200}`, "HTTP status 500"},
	{"status 302", 302, "", "HTTP status 302"},
	{"status 404 empty", 404, "", "HTTP status 404"},
	{"HTML with 200", 200, "<!DOCTYPE html><html>maintenance</html>", "starts with '<'"},
	{"empty body", 200, "", "body is empty"},
	{"whitespace body", 200, " \r\n\t ", "only whitespace"},
	{"truncated JSON", 200, `{"access_token":"TOKEN","expi`, "truncated"},
	{"trailing garbage", 200, `{"access_token":"TOKEN","expires_in":7200}x`, "not JSON"},
	{"two objects", 200, `{"access_token":"TOKEN","expires_in":7200}{}`, "not JSON"},
	{"top-level array", 200, `[{"access_token":"TOKEN","expires_in":7200}]`, "an array, want a JSON object"},
	{"top-level string", 200, `"TOKEN"`, "a string, want a JSON object"},
	{"top-level null", 200, `null`, "null, want a JSON object"},
	{"empty object", 200, `{}`, "access_token missing"},
	{"token key in other case", 200, `{"ACCESS_TOKEN":"TOKEN","expires_in":7200}`, "access_token missing"},
	{"empty token", 200, `{"access_token":"","expires_in":7200}`, "access_token is empty"},
	{"null token", 200, `{"access_token":null,"expires_in":7200}`, "access_token is null"},
	{"numeric token", 200, `{"access_token":12345,"expires_in":7200}`, "access_token is a number"},
	{"token with space", 200, `{"access_token":"TOK EN","expires_in":7200}`, "whitespace (byte 0x20) at offset 3"},
	{"token with trailing newline", 200, `{"access_token":"TOKEN\n","expires_in":7200}`, "whitespace (byte 0x0a) at offset 5"},
	{"token with NUL", 200, `{"access_token":"TOK\u0000EN","expires_in":7200}`, "control character (byte 0x00)"},
	{"token with DEL", 200, `{"access_token":"TOK\u007fEN","expires_in":7200}`, "control character (byte 0x7f)"},
	{"token non-ASCII", 200, `{"access_token":"TOKé","expires_in":7200}`, "non-ASCII byte 0xc3 at offset 3"},
	{"token invalid UTF-8", 200, "{\"access_token\":\"TOK\xff\",\"expires_in\":7200}", "non-ASCII"},
	{"token too long", 200, `{"access_token":"` + strings.Repeat("A", wechat.MaxTokenBytes+1) + `","expires_in":7200}`, "2049 bytes, over the 2048-byte limit"},
	{"expires_in missing", 200, `{"access_token":"TOKEN"}`, "expires_in missing"},
	{"expires_in string", 200, `{"access_token":"TOKEN","expires_in":"7200"}`, "expires_in is a string, want an integer"},
	{"expires_in null", 200, `{"access_token":"TOKEN","expires_in":null}`, "expires_in is null"},
	{"expires_in fraction", 200, `{"access_token":"TOKEN","expires_in":7200.5}`, "expires_in is not an integer"},
	{"expires_in exponent", 200, `{"access_token":"TOKEN","expires_in":7.2e3}`, "expires_in is not an integer"},
	{"expires_in zero", 200, `{"access_token":"TOKEN","expires_in":0}`, "expires_in is 0, want > 0"},
	{"expires_in negative", 200, `{"access_token":"TOKEN","expires_in":-5}`, "expires_in is -5, want > 0"},
	{"expires_in over a day", 200, `{"access_token":"TOKEN","expires_in":86401}`, "over the 86400 s"},
	{"expires_in huge", 200, `{"access_token":"TOKEN","expires_in":99999999999999999999}`, "expires_in is out of range"},
	{"errcode string", 200, `{"errcode":"40001","errmsg":"x"}`, "errcode is a string"},
	{"errcode fraction", 200, `{"errcode":1.5,"errmsg":"x"}`, "errcode is not an integer"},
	{"errcode out of int32", 200, `{"errcode":4294967296}`, "errcode 4294967296 is out of range"},
	{"body over 64 KiB", 200, `{"access_token":"TOKEN","expires_in":7200,"pad":"` + strings.Repeat("x", wechat.MaxReplyBytes) + `"}`, "body exceeds 65536 bytes"},
}

func checkMalformed(t *testing.T, tok wechat.Token, err error, endpoint string, tc malformedCase) {
	t.Helper()
	if tok != (wechat.Token{}) {
		t.Errorf("returned a token %v together with an error", tok)
	}
	var re *wechat.ReplyError
	if !errors.As(err, &re) {
		t.Fatalf("err = %v (%T), want *ReplyError", err, err)
	}
	if re.Endpoint != endpoint || re.Status != tc.status {
		t.Errorf("ReplyError endpoint/status = %q/%d, want %q/%d", re.Endpoint, re.Status, endpoint, tc.status)
	}
	if !strings.Contains(re.Reason, tc.reason) {
		t.Errorf("Reason = %q, want it to contain %q", re.Reason, tc.reason)
	}
	for _, class := range []error{wechat.ErrMalformedReply, wechat.ErrTransient, wechat.ErrOutcomeUnknown} {
		if !errors.Is(err, class) {
			t.Errorf("errors.Is(err, %v) = false, want true", class)
		}
	}
	for _, class := range []error{wechat.ErrQuota, wechat.ErrConfig, wechat.ErrTokenInvalid} {
		if errors.Is(err, class) {
			t.Errorf("errors.Is(err, %v) = true, want false", class)
		}
	}
	// Reasons name what was wrong, never the body: no token leaks.
	if strings.Contains(err.Error(), "TOKEN") || strings.Contains(err.Error(), "TOK") {
		t.Errorf("error %q quotes the body", err)
	}
}

func TestParseTokenReplyMalformed(t *testing.T) {
	if len(malformedCases) < 15 {
		t.Fatalf("only %d malformed cases", len(malformedCases))
	}
	for _, ep := range []string{wechat.EndpointToken, wechat.EndpointStableToken} {
		for _, tc := range malformedCases {
			t.Run(ep+"/"+tc.name, func(t *testing.T) {
				tok, err := wechat.ParseTokenReply(ep, tc.status, []byte(tc.body), t0)
				checkMalformed(t, tok, err, ep, tc)
			})
		}
	}
}

func TestParseTokenReplyValid(t *testing.T) {
	long := strings.Repeat("a", wechat.MaxTokenBytes)
	cases := []struct {
		name, body, token string
		expires           time.Duration
		status            int
	}{
		{"plain", `{"access_token":"ACCESS_TOKEN","expires_in":7200}`, "ACCESS_TOKEN", 2 * time.Hour, 200},
		{"errcode 0", `{"errcode":0,"errmsg":"ok","access_token":"T-1_x.Y~","expires_in":7200}`, "T-1_x.Y~", 2 * time.Hour, 200},
		{"stable near rollover", `{"access_token":"T","expires_in":300}`, "T", 5 * time.Minute, 200},
		{"exactly a day", `{"access_token":"T","expires_in":86400}`, "T", 24 * time.Hour, 200},
		{"one second", `{"access_token":"T","expires_in":1}`, "T", time.Second, 200},
		{"max length", `{"access_token":"` + long + `","expires_in":7200}`, long, 2 * time.Hour, 200},
		{"escaped ASCII", `{"access_token":"\u0041B\/C","expires_in":7200}`, "AB/C", 2 * time.Hour, 200},
		{"surrounding whitespace and extra fields", "\n {\"x\":[1,{}],\"expires_in\":60 , \"access_token\":\"T\"}\r\n", "T", time.Minute, 200},
		{"status 201", `{"access_token":"T","expires_in":7200}`, "T", 2 * time.Hour, 201},
		{"errmsg not a string", `{"errcode":0,"errmsg":5,"access_token":"T","expires_in":7200}`, "T", 2 * time.Hour, 200},
		{"duplicate key last wins", `{"access_token":"OLD","access_token":"NEW","expires_in":7200}`, "NEW", 2 * time.Hour, 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := wechat.ParseTokenReply(wechat.EndpointToken, tc.status, []byte(tc.body), t0)
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			want := wechat.Token{Value: tc.token, ExpiresIn: tc.expires, FetchedAt: t0}
			if tok != want {
				t.Fatalf("token = %+v (value %q), want %+v", tok, tok.Value, want)
			}
			if !tok.ExpiresAt().Equal(t0.Add(tc.expires)) {
				t.Errorf("ExpiresAt = %v", tok.ExpiresAt())
			}
		})
	}
}

// errcodeClasses is WECHAT-RULES.md section 3 for the token endpoints.
var errcodeClasses = []struct {
	code  int
	class error
}{
	{-1, wechat.ErrTransient}, {45011, wechat.ErrTransient}, {89501, wechat.ErrTransient}, {89503, wechat.ErrTransient},
	{45009, wechat.ErrQuota},
	{40001, wechat.ErrConfig}, {40002, wechat.ErrConfig}, {40013, wechat.ErrConfig}, {40125, wechat.ErrConfig},
	{40164, wechat.ErrConfig}, {40243, wechat.ErrConfig}, {41002, wechat.ErrConfig}, {41004, wechat.ErrConfig},
	{43002, wechat.ErrConfig}, {50004, wechat.ErrConfig}, {50007, wechat.ErrConfig}, {89506, wechat.ErrConfig}, {89507, wechat.ErrConfig},
	{12345, wechat.ErrTransient}, // unknown on a token endpoint: backoff, never hammer
}

var allClasses = []error{wechat.ErrTransient, wechat.ErrQuota, wechat.ErrConfig, wechat.ErrTokenInvalid}

// checkClass asserts err is *wechat.Error{code, endpoint} in exactly one class.
func checkClass(t *testing.T, err error, endpoint string, code int, class error) *wechat.Error {
	t.Helper()
	var we *wechat.Error
	if !errors.As(err, &we) {
		t.Fatalf("err = %v (%T), want *Error", err, err)
	}
	if we.Code != code || we.Endpoint != endpoint {
		t.Errorf("*Error code/endpoint = %d/%q, want %d/%q", we.Code, we.Endpoint, code, endpoint)
	}
	for _, c := range allClasses {
		if got, want := errors.Is(err, c), c == class; got != want {
			t.Errorf("errcode %d from %s: errors.Is(%v) = %v, want %v", code, endpoint, c, got, want)
		}
	}
	if errors.Is(err, wechat.ErrMalformedReply) || errors.Is(err, wechat.ErrOutcomeUnknown) {
		t.Errorf("errcode %d: an answered request must not match ErrMalformedReply/ErrOutcomeUnknown", code)
	}
	return we
}

func TestParseTokenReplyErrcodeClasses(t *testing.T) {
	for _, ep := range []string{wechat.EndpointToken, wechat.EndpointStableToken} {
		for _, tc := range errcodeClasses {
			// A token alongside a non-zero errcode must not be returned.
			body := `{"errcode":` + itoa(tc.code) + `,"errmsg":"msg","access_token":"T","expires_in":7200}`
			tok, err := wechat.ParseTokenReply(ep, 200, []byte(body), t0)
			if tok != (wechat.Token{}) {
				t.Errorf("errcode %d: returned token %v", tc.code, tok)
			}
			we := checkClass(t, err, ep, tc.code, tc.class)
			if we.Message != "msg" {
				t.Errorf("Message = %q, want %q", we.Message, "msg")
			}
		}
	}
}

func TestCheckBusinessReply(t *testing.T) {
	const ep = "/cgi-bin/message/custom/send"
	for _, tc := range []struct {
		code  int
		class error
	}{
		{40001, wechat.ErrTokenInvalid}, {40014, wechat.ErrTokenInvalid}, {42001, wechat.ErrTokenInvalid},
		{-1, wechat.ErrTransient}, {45011, wechat.ErrTransient}, {45009, wechat.ErrQuota},
		{40003, nil}, // the caller's business (invalid openid)
	} {
		err := wechat.CheckBusinessReply(ep, []byte(`{"errcode":`+itoa(tc.code)+`,"errmsg":"m"}`))
		checkClass(t, err, ep, tc.code, tc.class)
	}

	// 40001 means a wrong secret on a token endpoint, not a dead token.
	checkClass(t, wechat.CheckBusinessReply(wechat.EndpointToken, []byte(`{"errcode":40001}`)), wechat.EndpointToken, 40001, wechat.ErrConfig)

	for _, ok := range []string{`{"errcode":0,"errmsg":"ok"}`, `{"msgid":123}`, `[1,2]`, `"x"`, `{"errcode":0}`, " {} "} {
		if err := wechat.CheckBusinessReply(ep, []byte(ok)); err != nil {
			t.Errorf("CheckBusinessReply(%s) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []struct{ body, reason string }{
		{"", "body is empty"},
		{"<html>", "starts with '<'"},
		{`{"errcode":40001`, "truncated"},
		{`{"errcode":"40001"}`, "errcode is a string"},
		{`{"errcode":null}`, "errcode is null"},
	} {
		err := wechat.CheckBusinessReply(ep, []byte(bad.body))
		var re *wechat.ReplyError
		if !errors.As(err, &re) || !strings.Contains(re.Reason, bad.reason) || re.Endpoint != ep {
			t.Errorf("CheckBusinessReply(%q) = %v, want *ReplyError containing %q", bad.body, err, bad.reason)
			continue
		}
		if !errors.Is(err, wechat.ErrMalformedReply) || !errors.Is(err, wechat.ErrTransient) {
			t.Errorf("CheckBusinessReply(%q): error classes wrong: %v", bad.body, err)
		}
		if strings.Contains(err.Error(), "HTTP") {
			t.Errorf("error %q mentions an HTTP status it does not know", err)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
