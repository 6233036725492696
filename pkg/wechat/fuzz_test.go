package wechat_test

import (
	"errors"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

// FuzzParseTokenReply: the parser never panics, returns exactly one of a
// token or an error, and a token it returns obeys every validation rule.
// Seeds live in testdata/fuzz/FuzzParseTokenReply and run in every go test.
func FuzzParseTokenReply(f *testing.F) {
	f.Add(200, []byte(`{"access_token":"ACCESS_TOKEN","expires_in":7200}`), false)
	f.Add(200, []byte(`{"errcode":40001,"errmsg":"invalid credential"}`), true)
	f.Fuzz(func(t *testing.T, status int, body []byte, stable bool) {
		endpoint := wechat.EndpointToken
		if stable {
			endpoint = wechat.EndpointStableToken
		}
		tok, err := wechat.ParseTokenReply(endpoint, status, body, t0)
		if err != nil {
			if tok != (wechat.Token{}) {
				t.Fatalf("returned a token with error %v", err)
			}
			var we *wechat.Error
			var re *wechat.ReplyError
			switch {
			case errors.As(err, &we):
				if we.Code == 0 || we.Endpoint != endpoint {
					t.Fatalf("*Error with code %d endpoint %q", we.Code, we.Endpoint)
				}
			case errors.As(err, &re):
				if re.Reason == "" || re.Endpoint != endpoint || re.Status != status || !errors.Is(err, wechat.ErrMalformedReply) {
					t.Fatalf("bad ReplyError %#v", re)
				}
			default:
				t.Fatalf("unexpected error type %T: %v", err, err)
			}
			return
		}
		if status < 200 || status > 299 {
			t.Fatalf("accepted HTTP status %d", status)
		}
		if len(body) > wechat.MaxReplyBytes {
			t.Fatalf("accepted a %d-byte body", len(body))
		}
		if n := len(tok.Value); n == 0 || n > wechat.MaxTokenBytes {
			t.Fatalf("accepted a token of %d bytes", n)
		}
		for i := 0; i < len(tok.Value); i++ {
			if c := tok.Value[i]; c <= ' ' || c > '~' {
				t.Fatalf("accepted a token with byte 0x%02x at %d", c, i)
			}
		}
		if tok.ExpiresIn <= 0 || tok.ExpiresIn > wechat.MaxExpiresIn || tok.ExpiresIn%time.Second != 0 {
			t.Fatalf("accepted expires_in %v", tok.ExpiresIn)
		}
		if !tok.FetchedAt.Equal(t0) {
			t.Fatalf("FetchedAt = %v, want the time passed in", tok.FetchedAt)
		}
	})
}

// FuzzCheckBusinessReply: never panics; an error is either an *Error with a
// non-zero code or a ReplyError; nil only for JSON without a non-zero errcode.
func FuzzCheckBusinessReply(f *testing.F) {
	for _, s := range []string{`{"errcode":0,"errmsg":"ok"}`, `{"errcode":40001,"errmsg":"x"}`, `{"errcode":42001}`,
		`{"ip_list":["1.2.3.4"]}`, `[]`, ``, `<html>`, `{"errcode":"40001"}`, `{"errcode":1e3}`, `{"errcode":-1}`} {
		f.Add([]byte(s))
	}
	const ep = "/cgi-bin/message/custom/send"
	f.Fuzz(func(t *testing.T, body []byte) {
		err := wechat.CheckBusinessReply(ep, body)
		if err == nil {
			return
		}
		var we *wechat.Error
		var re *wechat.ReplyError
		switch {
		case errors.As(err, &we):
			if we.Code == 0 || we.Endpoint != ep {
				t.Fatalf("*Error code %d endpoint %q", we.Code, we.Endpoint)
			}
			isInvalid := we.Code == 40001 || we.Code == 40014 || we.Code == 42001
			if errors.Is(err, wechat.ErrTokenInvalid) != isInvalid {
				t.Fatalf("errcode %d: ErrTokenInvalid = %v", we.Code, !isInvalid)
			}
		case errors.As(err, &re):
			if re.Reason == "" || re.Endpoint != ep {
				t.Fatalf("bad ReplyError %#v", re)
			}
		default:
			t.Fatalf("unexpected error type %T: %v", err, err)
		}
	})
}
