package tokencache

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/tokenkeeper/tokenkeeper/internal/redistest"
)

// FuzzRecordGrammar proves the record grammar is one language: the Go
// decoder and the scripts' Lua parser, run by a real redis-server and by
// miniredis, accept exactly the same strings and read the same fields. A
// record one side accepts and the other rejects is a poison record: the
// scripts would compare against a version Go never saw.
func FuzzRecordGrammar(f *testing.F) {
	good := EncodeRecord(Token{Value: "ACCESS_token-1", Version: 99, Rev: 1700000000001, UsableUntil: time.UnixMilli(1700000000000),
		RefreshAt: time.UnixMilli(1699999990000), ExpiresAt: time.UnixMilli(1700000060000), FetchedAt: time.UnixMilli(1699990000000),
		IssuedAt: time.UnixMilli(1699990001000)})
	for _, seed := range []string{
		good,
		"tk2|1|1|2|1|4|1|0|t",
		withField(good, fieldVersion, "0"),
		withField(good, fieldRev, "0"),
		withField(good, fieldIssuedAt, "01"),
		withField(good, fieldIssuedAt, "999999999999999"),
		withField(good, fieldIssuedAt, "1000000000000000"),
		withField(good, fieldIssuedAt, "99999999999999999999"),
		withField(good, fieldIssuedAt, "-1"),
		withField(good, fieldIssuedAt, "1e3"),
		withField(good, fieldIssuedAt, " 1"),
		withField(good, fieldRefreshAt, "1700000000001"),
		withField(good, fieldUsableUntil, "1700000060001"),
		withField(good, fieldFetchedAt, "1700000060001"),
		withField(good, fieldFetchedAt, "1699913660000"), // expires_at exactly 24 h later
		withField(good, fieldFetchedAt, "1699913659999"), // a millisecond more
		good + " x",
		good + "\x00",
		good + "\x7f",
		good + "|x",
		good + "\u00e9",
		"tk2|1|1|2|1|4|1|0|" + strings.Repeat("a", maxTokenLen),
		"tk2|1|1|2|1|4|1|0|" + strings.Repeat("a", maxTokenLen+1),
		"tk2|1|1|2|1|4|1|0|",
		"tk2|1|1|2|1|4|1|t",
		"tk1|1|2|1|4|1|0|t",
		"TK2|1|1|2|1|4|1|0|t",
		"<html>oops</html>",
		"",
	} {
		f.Add(seed)
	}
	ctx := context.Background()
	m := miniredis.RunT(f)
	backends := map[string]*redis.Client{"miniredis": redis.NewClient(&redis.Options{Addr: m.Addr()})}
	srv := redistest.Start(f)
	backends["redis-server"] = srv.Client()
	for _, c := range backends {
		f.Cleanup(func() { _ = c.Close() })
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := DecodeRecord("k", s)
		goAccepts := err == nil
		for name, c := range backends {
			if err := c.Set(ctx, "grammar", s, 0).Err(); err != nil {
				t.Fatal(err)
			}
			got, err := checkRecord.run(ctx, c, []string{"grammar"}, struct{}{}).Slice()
			luaAccepts := err == nil
			if err != nil && err != redis.Nil {
				t.Fatalf("%s: %v", name, err)
			}
			if luaAccepts != goAccepts {
				t.Fatalf("%s: %q: Lua accepts %v, Go accepts %v (%v)", name, s, luaAccepts, goAccepts, decodeErr(s))
			}
			if !goAccepts {
				continue
			}
			want := []string{strconv.FormatInt(tok.Version, 10), strconv.FormatInt(tok.Rev, 10),
				strconv.FormatInt(tok.UsableUntil.UnixMilli(), 10), strconv.FormatInt(tok.RefreshAt.UnixMilli(), 10),
				strconv.FormatInt(tok.ExpiresAt.UnixMilli(), 10), strconv.FormatInt(tok.FetchedAt.UnixMilli(), 10),
				strconv.FormatInt(unixMilliOrZero(tok.IssuedAt), 10), tok.Value}
			for i, w := range want {
				if got[i] != w {
					t.Fatalf("%s: %q: field %d: Lua read %q, Go %q", name, s, i, got[i], w)
				}
			}
		}
	})
}

func decodeErr(s string) error {
	_, err := DecodeRecord("k", s)
	return err
}
