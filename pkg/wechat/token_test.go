package wechat_test

import (
	"errors"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/pkg/wechat"
)

func TestQuotaDayIsBeijing(t *testing.T) {
	for _, tc := range []struct {
		utc       string
		day       string
		nextReset string // UTC
	}{
		{"2026-11-20T15:59:59Z", "20261120", "2026-11-20T16:00:00Z"}, // 23:59:59 in Beijing
		{"2026-11-20T16:00:00Z", "20261121", "2026-11-21T16:00:00Z"}, // Beijing midnight
		{"2026-12-31T20:00:00Z", "20270101", "2027-01-01T16:00:00Z"},
		{"2028-02-28T17:00:00Z", "20280229", "2028-02-29T16:00:00Z"}, // leap day
	} {
		at, _ := time.Parse(time.RFC3339, tc.utc)
		if got := wechat.QuotaDay(at); got != tc.day {
			t.Errorf("QuotaDay(%s) = %s, want %s", tc.utc, got, tc.day)
		}
		want, _ := time.Parse(time.RFC3339, tc.nextReset)
		if got := wechat.NextQuotaReset(at); !got.Equal(want) {
			t.Errorf("NextQuotaReset(%s) = %s, want %s", tc.utc, got.UTC(), tc.nextReset)
		}
	}
}

func TestParseMode(t *testing.T) {
	for in, want := range map[string]wechat.Mode{"": wechat.Classic, "classic": wechat.Classic, "stable": wechat.Stable} {
		if got, err := wechat.ParseMode(in); err != nil || got != want || (in != "" && got.String() != in) {
			t.Errorf("ParseMode(%q) = %v, %v", in, got, err)
		}
	}
	_, err := wechat.ParseMode("Stable")
	var me *wechat.ModeError
	if !errors.As(err, &me) || err.Error() != `wechat: unknown token mode "Stable" (want "classic" or "stable")` {
		t.Errorf("ParseMode(Stable) = %v", err)
	}
	if wechat.Mode(5).String() != "unknown" {
		t.Errorf("Mode(5) = %s", wechat.Mode(5))
	}
}

func TestFingerprint(t *testing.T) {
	a, b := wechat.Fingerprint("token-a"), wechat.Fingerprint("token-b")
	if len(a) != 8 || a == b || a != wechat.Fingerprint("token-a") || wechat.Fingerprint("") != "none" {
		t.Errorf("Fingerprint: %q %q", a, b)
	}
}

func TestClassifyBusinessMatchesClassify(t *testing.T) {
	for _, code := range []int{0, -1, 40001, 40014, 42001, 45009, 45011, 40003} {
		if wechat.ClassifyBusiness(code) != wechat.Classify("/cgi-bin/message/custom/send", code) {
			t.Errorf("code %d: ClassifyBusiness and Classify disagree", code)
		}
	}
	if wechat.Classify(wechat.EndpointToken, 40001) != wechat.ErrConfig || wechat.ClassifyBusiness(40001) != wechat.ErrTokenInvalid {
		t.Errorf("40001 must depend on the endpoint")
	}
}
