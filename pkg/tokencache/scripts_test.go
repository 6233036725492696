package tokencache

import (
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// Script arguments travel by name: every a.<name> a script reads, in its
// body or in the prelude functions it may call, must be a field of its args
// struct, or Lua would read nil where a swap or a typo broke it.
func TestScriptsReadOnlyTheArgumentsTheirStructsDefine(t *testing.T) {
	read := regexp.MustCompile(`\ba\.([a-z_]+)`)
	for _, tc := range []struct {
		name   string
		script script
		args   any
	}{
		{"beginFetch", beginFetch, beginArgs{}},
		{"commitFetch", commitFetch, commitArgs{}},
		{"abortFetch", abortFetch, abortArgs{}},
		{"seeTicket", seeTicket, seeArgs{}},
		{"clearPending", clearPending, clearArgs{}},
		{"registerGetticket", registerGetticket, registerArgs{}},
	} {
		tags := map[string]bool{}
		typ := reflect.TypeOf(tc.args)
		for i := range typ.NumField() {
			tag, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
			if tag == "" {
				t.Errorf("%s: field %s has no json name", tc.name, typ.Field(i).Name)
			}
			tags[tag] = true
		}
		used := map[string]bool{}
		for _, m := range read.FindAllStringSubmatch(tc.script.src, -1) {
			used[m[1]] = true
			if !tags[m[1]] {
				t.Errorf("%s reads a.%s, which %T does not define", tc.name, m[1], tc.args)
			}
		}
		for tag := range tags {
			if !used[tag] {
				t.Errorf("%s: %T.%s is never read by the script", tc.name, tc.args, tag)
			}
		}
	}
}
