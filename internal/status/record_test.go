package status

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestRecordRoundTrip(t *testing.T) {
	in := Record{Result: "transient", At: time.Date(2026, 3, 4, 5, 6, 7, 8e6, time.UTC), Error: "wechat: errcode -1", By: "r2"}
	data := in.Encode()
	if got := string(data); got != `{"result":"transient","at":"2026-03-04T05:06:07.008Z","error":"wechat: errcode -1","by":"r2"}` {
		t.Errorf("encoded %s", got)
	}
	out, err := DecodeRecord(data)
	if err != nil || out != in {
		t.Fatalf("decoded %+v, %v; want %+v", out, err, in)
	}
	// A time JSON cannot hold still encodes the rest.
	odd := Record{Result: "ok", At: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), By: "r1"}
	if got := string(odd.Encode()); !strings.Contains(got, `"result":"ok"`) || !strings.Contains(got, `"by":"r1"`) {
		t.Errorf("year 10000 encoded as %s", got)
	}
}

func TestDecodeCorruptRecord(t *testing.T) {
	for _, tc := range []struct {
		name, data, want string
	}{
		{"empty", ``, `corrupt last_fetch record "": unexpected end of JSON input`},
		{"not json", `ok`, `corrupt last_fetch record "ok": invalid character`},
		{"cut short", `{"result":"ok","at":"2026-01-0`, `corrupt last_fetch record "{\"result\":\"ok\",\"at\":\"2026-01-0": unexpected end`},
		{"wrong type", `{"result":7}`, `cannot unmarshal number into Go struct field Record.result of type string`},
		{"bad time", `{"result":"ok","at":"yesterday"}`, `corrupt last_fetch record "{\"result\":\"ok\",\"at\":\"yesterday\"}": parsing time`},
		{"array", `[1,2]`, `cannot unmarshal array`},
		{"no result", `{"at":"2026-01-02T03:04:05Z"}`, `no "result"`},
		{"no time", `{"result":"ok"}`, `no "at" time`},
		{"long value quoted in part", `{"result":"` + strings.Repeat("y", 100), `"{\"result\":\"yyyyyyyyyyyyyyyyyyyyyyyyyyyyy"...: unexpected end`},
	} {
		rec, err := DecodeRecord([]byte(tc.data))
		if !errors.Is(err, ErrCorruptRecord) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %+v, %v; want ErrCorruptRecord containing %q", tc.name, rec, err, tc.want)
		}
		if rec != (Record{}) {
			t.Errorf("%s: a partial record %+v came back with the error", tc.name, rec)
		}
	}
}

func TestTruncateKeepsRunesWhole(t *testing.T) {
	if got := truncate("abc", 3); got != "abc" {
		t.Errorf("short string changed: %q", got)
	}
	if got := truncate("abcdef", 3); got != "abc..." {
		t.Errorf("got %q", got)
	}
	if got := truncate("ab系统繁忙", 4); got != "ab..." { // 系 is 3 bytes: cutting at 4 would split it
		t.Errorf("got %q", got)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add([]byte(`{"result":"ok","at":"2026-01-02T03:04:05Z","by":"r1"}`))
	f.Add([]byte(`{"result":`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, err := DecodeRecord(data)
		if err != nil {
			if !errors.Is(err, ErrCorruptRecord) {
				t.Fatalf("error %v is not ErrCorruptRecord", err)
			}
			return
		}
		if rec.Result == "" || rec.At.IsZero() {
			t.Fatalf("accepted an incomplete record %+v", rec)
		}
	})
}
