package tokencache

import (
	"strings"
	"testing"
)

// Positions of a record's fields when split on "|".
const (
	fieldVersion = 1 + iota
	fieldRev
	fieldUsableUntil
	fieldRefreshAt
	fieldExpiresAt
	fieldFetchedAt
	fieldIssuedAt
)

// withField sets fields of an encoded record: withField(rec, fieldRev, "3").
func withField(rec string, kv ...any) string {
	f := strings.SplitN(rec, "|", len(recordFields)+2)
	for i := 0; i < len(kv); i += 2 {
		f[kv[i].(int)] = kv[i+1].(string)
	}
	return strings.Join(f, "|")
}

// waitApplied waits until f.cache's copy of app has seen tok's rev.
func (f *fixture) waitApplied(t *testing.T, app string, tok Token) {
	t.Helper()
	st, _ := f.cache.app(app)
	waitFor(t, "the announcement", func() bool {
		st.near.mu.Lock()
		defer st.near.mu.Unlock()
		return st.near.rev >= tok.Rev
	})
}

// putRecordSilently stores tok as the app's record, with a new rev, without
// announcing it: as if the announcement was lost.
func (f *fixture) putRecordSilently(t *testing.T, app string, tok Token) {
	t.Helper()
	tok.Rev = f.clock.Now().UnixMilli() + 1000
	key := RecordKey("tokenkeeper:", app)
	f.m.Set(key, EncodeRecord(tok))
	f.m.SetTTL(key, tok.UsableUntil.Sub(f.clock.Now()))
}
