package chaos

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/pkg/tokencache"
)

// TestMutationsMakeWhatTheyName applies every mutation to a live record of
// each known format and checks the one field it is about, and that every
// other field is left as it was.
func TestMutationsMakeWhatTheyName(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_000)
	ms := func(d time.Duration) string { return strconv.FormatInt(now.Add(d).UnixMilli(), 10) }
	token := strings.Repeat("x", 100) + "TOKEN" + strings.Repeat("y", 50)
	lives := map[string]string{
		"tk2": "tk2|7|42|" + ms(14*time.Second) + "|" + ms(8*time.Second) + "|" + ms(15*time.Second) + "|" + ms(-5*time.Second) + "|" + ms(-5*time.Second) + "|" + token,
	}
	num := func(t *testing.T, rec *liveRecord, name string) int64 {
		t.Helper()
		n, err := rec.ms(name)
		if err != nil {
			t.Fatalf("%s = %q: %v", name, rec.fields[name], err)
		}
		return n
	}
	checks := map[string]func(t *testing.T, rec *liveRecord, raw string){
		"token-with-space":        func(t *testing.T, rec *liveRecord, _ string) { want(t, strings.Contains(rec.token, " ")) },
		"token-with-control-byte": func(t *testing.T, rec *liveRecord, _ string) { want(t, strings.ContainsRune(rec.token, 7)) },
		"token-over-2048-bytes":   func(t *testing.T, rec *liveRecord, _ string) { want(t, len(rec.token) > 2048) },
		"version-zero":            func(t *testing.T, rec *liveRecord, _ string) { want(t, rec.fields["version"] == "0") },
		"issued-at-20-digits": func(t *testing.T, rec *liveRecord, _ string) {
			_, err := rec.ms("issued_at")
			want(t, len(rec.fields["issued_at"]) == 20 && err != nil) // beyond int64
		},
		"refresh-after-usable": func(t *testing.T, rec *liveRecord, _ string) {
			want(t, num(t, rec, "refresh_at") > num(t, rec, "usable_until"))
		},
		"usable-after-expires": func(t *testing.T, rec *liveRecord, _ string) {
			want(t, num(t, rec, "usable_until") > num(t, rec, "expires_at"))
		},
		"usable-until-past": func(t *testing.T, rec *liveRecord, _ string) {
			u := num(t, rec, "usable_until")
			want(t, u < now.UnixMilli() && num(t, rec, "refresh_at") <= u)
		},
		"usable-until-far-future": func(t *testing.T, rec *liveRecord, _ string) {
			u := num(t, rec, "usable_until")
			want(t, u > now.Add(24*time.Hour).UnixMilli() && u <= num(t, rec, "expires_at"))
		},
	}
	names := map[string]bool{}
	for _, m := range mutations {
		if names[m.name] {
			t.Fatalf("mutation %s listed twice", m.name)
		}
		names[m.name] = true
		for tag, live := range lives {
			t.Run(tag+"/"+m.name, func(t *testing.T) {
				v, err := poisonValue(live, m, now)
				if err != nil {
					t.Fatal(err)
				}
				if m.name == "not-a-record" {
					if strings.HasPrefix(v, "tk") || strings.Contains(v, token) {
						t.Fatalf("junk %q looks like a record", v)
					}
					return
				}
				rec, err := parseRecord(v)
				if err != nil {
					t.Fatalf("poison %q: %v", v, err)
				}
				orig, _ := parseRecord(live)
				check, ok := checks[m.name]
				if !ok {
					t.Fatalf("no check for mutation %s", m.name)
				}
				check(t, rec, v)
				// Every field the mutation is not about is unchanged.
				about := map[string][]string{
					"version-zero": {"version"}, "issued-at-20-digits": {"issued_at"}, "refresh-after-usable": {"refresh_at"},
					"usable-after-expires": {"usable_until"}, "usable-until-past": {"usable_until", "refresh_at"},
					"usable-until-far-future": {"usable_until", "expires_at"},
				}[m.name]
				for _, n := range orig.names {
					if !slices.Contains(about, n) && rec.fields[n] != orig.fields[n] {
						t.Errorf("field %s changed from %s to %s", n, orig.fields[n], rec.fields[n])
					}
				}
				if !strings.HasPrefix(m.name, "token-") && rec.token != orig.token {
					t.Errorf("token changed")
				}
			})
		}
	}
	if _, err := parseRecord("tk9|1|2|" + token); err == nil {
		t.Fatal("an unknown record format was parsed")
	}
	if got := tokenOfRecord(lives["tk2"]); got != token {
		t.Fatalf("tokenOfRecord = %q", got)
	}
}

func want(t *testing.T, ok bool) {
	t.Helper()
	if !ok {
		t.Fatal("the mutation did not make what it names")
	}
}

// The layout the poison fault mutates by name is tokencache's own.
func TestRecordLayoutIsTokencaches(t *testing.T) {
	tok := tokencache.Token{Value: "TOKEN", Version: 1, Rev: 2, UsableUntil: time.UnixMilli(3), RefreshAt: time.UnixMilli(4),
		ExpiresAt: time.UnixMilli(5), FetchedAt: time.UnixMilli(6), IssuedAt: time.UnixMilli(7)}
	rec, err := parseRecord(tokencache.EncodeRecord(tok))
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"version", "rev", "usable_until", "refresh_at", "expires_at", "fetched_at", "issued_at"} {
		if got := rec.fields[name]; got != strconv.Itoa(i+1) {
			t.Errorf("field %s = %s, want %d: the layout differs from tokencache's", name, got, i+1)
		}
	}
	if rec.token != "TOKEN" {
		t.Errorf("token = %q", rec.token)
	}
}
