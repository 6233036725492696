package httpapi

import "testing"

func TestReadyzListsWarningsAfterOK(t *testing.T) {
	var warnings []string
	e := newEnv(t, func(c *Config) { c.ReadyWarnings = func() []string { return warnings } })
	if w := e.do(req{path: "/readyz"}); w.Code != 200 || w.Body.String() != "ok\n" {
		t.Fatalf("no warning: %d %q", w.Code, w.Body.String())
	}
	warnings = []string{"redis may evict", "second"}
	if w := e.do(req{path: "/readyz"}); w.Code != 200 || w.Body.String() != "ok\nwarning: redis may evict\nwarning: second\n" {
		t.Fatalf("warnings: %d %q", w.Code, w.Body.String())
	}
}
