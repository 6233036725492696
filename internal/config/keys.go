package config

import (
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"
)

// How an unknown key is named in an error.
//
// A key name is not a secret, and a misspelt key is the commonest mistake
// in a configuration file, so an unknown key that is a near miss of a valid
// key of its section is named in full, with that key suggested:
//
//	'cache' has invalid keys: "refresh_ahaed" (did you mean "refresh_ahead"?)
//
// A near miss is within suggestDistance edits (insertions, deletions,
// substitutions, swaps of two neighbours) of the valid key. Every valid key
// is at most 17 characters long, so a near miss is at most 20: one that is
// very long cannot be a near miss.
//
// Any other unknown key may be something that is not a name at all: a
// secret pasted on a line of its own, or where a key goes, becomes a key
// with an empty value. It is quoted like a rejected value (shown): in full
// up to 12 characters, beyond that only by its first 4 characters and its
// length. A secret is never within a few edits of a setting's name.

// keySuggestion names an unknown key of the section the decoder calls
// section ("" for the top level, "cache", "apps[0]", "http.api_keys[1]"):
// in full with the nearest valid key when it is a near miss of one,
// otherwise through shown.
func keySuggestion(section, key string) string {
	if near := nearestKey(validKeys(section), key); near != "" {
		return strconv.Quote(key) + " (did you mean " + strconv.Quote(near) + "?)"
	}
	return shown(key)
}

// suggestDistance is how many edits away from a valid key of n characters
// an unknown key may be to count as its misspelling: a quarter of n,
// at least 1 and at most 3.
func suggestDistance(n int) int {
	return min(3, max(1, n/4))
}

// nearestKey returns the valid key closest to key if it is a near miss
// (the first in valid's order on a tie), or "".
func nearestKey(valid []string, key string) string {
	best, bestDist := "", -1
	for _, v := range valid {
		d := editDistance(key, v)
		if d > suggestDistance(utf8.RuneCountInString(v)) {
			continue
		}
		if bestDist < 0 || d < bestDist {
			best, bestDist = v, d
		}
	}
	return best
}

// validKeys lists, in declaration order, the keys the file may use in the
// section the decoder names section, or nil if it names no section of
// rawConfig.
func validKeys(section string) []string {
	t := reflect.TypeFor[rawConfig]()
	if section != "" {
		for _, part := range strings.Split(section, ".") {
			name, _, _ := strings.Cut(part, "[") // "apps[0]" → the apps list's items
			f, ok := fieldByKey(t, name)
			if !ok {
				return nil
			}
			t = f.Type
			for t.Kind() == reflect.Slice || t.Kind() == reflect.Pointer {
				t = t.Elem()
			}
		}
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		if k := keyOf(t.Field(i)); k != "" {
			keys = append(keys, k)
		}
	}
	return keys
}

func fieldByKey(t reflect.Type, key string) (reflect.StructField, bool) {
	if t.Kind() != reflect.Struct {
		return reflect.StructField{}, false
	}
	for i := 0; i < t.NumField(); i++ {
		if f := t.Field(i); keyOf(f) == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// keyOf is the file key of a rawConfig field ("" for unexported fields).
func keyOf(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
	return name
}

// editDistance is the optimal string alignment distance between a and b:
// the Levenshtein distance with a swap of two neighbouring characters
// counting as one edit ("ahaed" → "ahead").
func editDistance(a, b string) int {
	r, s := []rune(a), []rune(b)
	// d[i][j] is the distance between r[:i] and s[:j]; three rows suffice.
	prev2 := make([]int, len(s)+1)
	prev := make([]int, len(s)+1)
	cur := make([]int, len(s)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(r); i++ {
		cur[0] = i
		for j := 1; j <= len(s); j++ {
			cost := 1
			if r[i-1] == s[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && r[i-1] == s[j-2] && r[i-2] == s[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(s)]
}
