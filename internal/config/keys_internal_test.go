package config

import (
	"slices"
	"strings"
	"testing"
)

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"", "abc", 3}, {"abc", "", 3}, {"margin", "margin", 0},
		{"refresh_ahaed", "refresh_ahead", 1}, // a swap is one edit
		{"margn", "margin", 1}, {"refresh-ahead", "refresh_ahead", 1},
		{"ca", "abc", 3}, // optimal string alignment, not full Damerau (2)
		{"kitten", "sitting", 3}, {"décodé", "decode", 2},
	} {
		if got := editDistance(tc.a, tc.b); got != tc.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := editDistance(tc.b, tc.a); got != tc.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.b, tc.a, got, tc.want)
		}
	}
}

// Every scalar key has its section's list of valid keys behind it, so a
// misspelling of any of them can be suggested.
func TestValidKeysKnowEveryKey(t *testing.T) {
	for key := range defaults {
		section, name := "", key
		if i := strings.LastIndex(key, "."); i >= 0 {
			section, name = key[:i], key[i+1:]
		}
		if !slices.Contains(validKeys(section), name) {
			t.Errorf("validKeys(%q) = %q lacks %q", section, validKeys(section), name)
		}
	}
	for section, want := range map[string]string{"apps[3]": "secret_file", "http.api_keys[0]": "key_env", "": "apps"} {
		if !slices.Contains(validKeys(section), want) {
			t.Errorf("validKeys(%q) = %q lacks %q", section, validKeys(section), want)
		}
	}
	for _, section := range []string{"nope", "cache.margin", "apps[0].id"} {
		if got := validKeys(section); got != nil {
			t.Errorf("validKeys(%q) = %q, want nil", section, got)
		}
	}
}

// An unknown key that is no near miss is quoted like a rejected value: a
// secret pasted where a key goes is not echoed.
func TestKeySuggestionHidesWhatIsNotANearMiss(t *testing.T) {
	const pasted = "0123456789abcdef0123456789abcdef"
	if got := keySuggestion("", pasted); got != `"0123…" (32 characters, the rest not shown)` {
		t.Errorf("pasted secret as a key: %s", got)
	}
	if got := keySuggestion("cache", "refresh_ahead_"+pasted); strings.Contains(got, pasted[:12]) || strings.Contains(got, "did you mean") {
		t.Errorf("long key: %s", got)
	}
	if got := keySuggestion("cache", "zzz"); got != `"zzz"` {
		t.Errorf("short unknown key: %s", got)
	}
}
