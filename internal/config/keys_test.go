package config_test

import (
	"strings"
	"testing"
)

// A misspelt key is a name, not a secret: the error names it in full and
// suggests the valid key of its section it is nearest to. The first five
// are longer than 12 characters, which used to be cut to 4.
func TestMisspeltKeyIsNamedInFullWithASuggestion(t *testing.T) {
	for _, tc := range []struct {
		yaml, typo, want string
	}{
		{"cache: {refresh_ahaed: 1s}\n", "refresh_ahaed", "refresh_ahead"},
		{"cache: {fetch_timoeut: 1s}\n", "fetch_timoeut", "fetch_timeout"},
		{"lease: {renew_deadlien: 1s}\n", "renew_deadlien", "renew_deadline"},
		{"redis: {addrs: [\"127.0.0.1:7000\"], password_fiel: /x}\n", "password_fiel", "password_file"},
		{"http: {invalidate_rte: 2}\n", "invalidate_rte", "invalidate_rate"},
		// Keys in a list item and in a nested list.
		{"apps: [{id: wx0000000000000001, secret: a, secert_file: /x}]\n", "secert_file", "secret_file"},
		{"http: {api_keys: [{name: k, key_fiel: /x, apps: ['*']}]}\n", "key_fiel", "key_file"},
		// Top level; a dash for an underscore.
		{"identiy: a\n", "identiy", "identity"},
		{"cache: {refresh-ahead: 1s}\n", "refresh-ahead", "refresh_ahead"},
	} {
		yaml := tc.yaml
		if !strings.HasPrefix(yaml, "apps:") {
			yaml = "apps: [{id: wx0000000000000000, secret: a}]\n" + yaml
		}
		_, err := load(t, yaml)
		if err == nil {
			t.Errorf("%q: accepted", tc.yaml)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, `"`+tc.typo+`"`) {
			t.Errorf("%q: the error does not name %q in full: %v", tc.yaml, tc.typo, msg)
		}
		if !strings.Contains(msg, `did you mean "`+tc.want+`"?`) {
			t.Errorf("%q: the error does not suggest %q: %v", tc.yaml, tc.want, msg)
		}
		if strings.Contains(msg, "not shown") {
			t.Errorf("%q: the error hides part of a key name: %v", tc.yaml, msg)
		}
	}
}

// Several unknown keys in one section are each named, each with its own
// suggestion; a key like nothing valid gets none.
func TestSeveralMisspeltKeys(t *testing.T) {
	_, err := load(t, "apps: [{id: wx0000000000000000, secret: a}]\ncache: {refresh_ahaed: 1s, margn: 2s, zzz: 3}\n")
	if err == nil {
		t.Fatal("accepted")
	}
	msg := err.Error()
	for _, want := range []string{`"refresh_ahaed" (did you mean "refresh_ahead"?)`, `"margn" (did you mean "margin"?)`, `"zzz"`} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q: %v", want, msg)
		}
	}
	if strings.Count(msg, "did you mean") != 2 {
		t.Errorf("want exactly two suggestions: %v", msg)
	}
}
