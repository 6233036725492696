package httpapi

import (
	"encoding/json"
	"regexp"
	"testing"
)

// invalidateErrors are every message parseInvalidateBody may return, with
// numbers replaced by #. A message outside this set could be echoing the
// body, which may hold a token.
var invalidateErrors = map[string]bool{
	"request body larger than # bytes":                                   true,
	"invalid JSON body: syntax error at byte #":                          true,
	`invalid JSON body: "access_token" must be a string`:                 true,
	"invalid JSON body: the body must be a JSON object":                  true,
	"invalid JSON body: empty body":                                      true,
	"invalid JSON body: body ends in the middle of the object":           true,
	`invalid JSON body: unknown field (only "access_token" is allowed)`:  true,
	`invalid JSON body: not a JSON object with an "access_token" string`: true,
	"invalid JSON body: data after the object":                           true,
	`"access_token" is missing or empty`:                                 true,
	`"access_token" longer than # bytes`:                                 true,
	`"access_token" contains a character outside printable ASCII`:        true,
}

var digits = regexp.MustCompile(`[0-9]+`)

func FuzzInvalidateBody(f *testing.F) {
	// More seeds live in testdata/fuzz/FuzzInvalidateBody.
	f.Add([]byte(`{"access_token":"ACCESS_TOKEN"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		tok, err := parseInvalidateBody(body)
		if err != nil {
			if tok != "" {
				t.Fatalf("error %v with a token", err)
			}
			if msg := digits.ReplaceAllString(err.Error(), "#"); !invalidateErrors[msg] {
				t.Fatalf("unexpected error message %q (it may echo the body)", err.Error())
			}
			return
		}
		if tok == "" || len(tok) > maxTokenLen || len(body) > MaxBodyBytes {
			t.Fatalf("accepted token of %d bytes from a body of %d bytes", len(tok), len(body))
		}
		for i := 0; i < len(tok); i++ {
			if tok[i] <= ' ' || tok[i] > '~' {
				t.Fatalf("accepted a token with byte %#x", tok[i])
			}
		}
		// What was accepted is what a client would have sent: encoding the
		// token again and decoding it gives the same token.
		again, err := json.Marshal(map[string]string{"access_token": tok})
		if err != nil {
			t.Fatal(err)
		}
		if tok2, err := parseInvalidateBody(again); err != nil || tok2 != tok {
			t.Fatalf("round trip of %q gave %q, %v", tok, tok2, err)
		}
	})
}
